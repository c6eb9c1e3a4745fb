"""Seeded train/validation splits of a data set held as whole tensors."""

from __future__ import annotations

import torch

from ltrain.errors import MisconfigurationException

Split = tuple[torch.Tensor, torch.Tensor]


def check_val_split(owner: str, val_split: int | float) -> None:
    """`val_split` is a count >= 0 or a fraction in [0, 1)."""
    if isinstance(val_split, bool) or not isinstance(val_split, (int, float)):
        raise MisconfigurationException(
            f"{owner}: val_split must be a count or a fraction, got {val_split!r}"
        )
    if isinstance(val_split, float) and not 0 <= val_split < 1:
        raise MisconfigurationException(
            f"{owner}: val_split as a fraction must be in [0, 1), got {val_split}"
        )
    if isinstance(val_split, int) and val_split < 0:
        raise MisconfigurationException(
            f"{owner}: val_split as a count must be >= 0, got {val_split}"
        )


def seeded_split(
    images: torch.Tensor, labels: torch.Tensor, val_split: int | float, seed: int, owner: str
) -> dict[str, Split]:
    """{'train': ..., 'val': ...}: the same split for the same seed, each in the file's order."""
    n = len(labels)
    n_val = int(n * val_split) if isinstance(val_split, float) else val_split
    if n_val >= n:
        raise MisconfigurationException(
            f"{owner}: val_split={val_split} leaves no training images out of {n}"
        )
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    # Sorted so both sets keep the file's order; only the training loader shuffles.
    val_idx, train_idx = perm[:n_val].sort().values, perm[n_val:].sort().values
    return {
        "train": (images[train_idx], labels[train_idx]),
        "val": (images[val_idx], labels[val_idx]),
    }
