"""Checkpoint files: plain data only, written atomically, loaded without unpickling objects.

A checkpoint is untrusted input. It holds tensors, numbers, strings, lists and dicts, is written
through a temporary file and a rename, and is read with `torch.load(weights_only=True)`, which
refuses anything that would run code. The keys follow Lightning's (`state_dict`, `epoch`,
`global_step`, `optimizer_states`, `lr_schedulers`, `hyper_parameters`) so scripts that read
Lightning checkpoints read ours.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import torch

from ltrain.files import write_atomically

_PLAIN_LEAVES = (str, int, float, bool, type(None), torch.Tensor, torch.dtype, torch.device)


class UnsafeCheckpointError(ValueError):
    """The file is not a checkpoint ltrain can load without running code from it."""


def plain_data(value: Any, where: str = "checkpoint") -> Any:
    """`value` as plain data (tuples become lists), or TypeError naming the first foreign object."""
    if isinstance(value, _PLAIN_LEAVES):
        return value
    if isinstance(value, Mapping):
        return {k: plain_data(v, f"{where}[{k!r}]") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain_data(v, f"{where}[{i}]") for i, v in enumerate(value)]
    raise TypeError(f"{where} holds a {type(value).__name__}, which a checkpoint cannot store")


def save_checkpoint(checkpoint: Mapping[str, Any], path: str | os.PathLike) -> None:
    """Write `checkpoint` so that `path` is always either absent, the old file, or the full new one."""
    plain = plain_data(checkpoint)
    write_atomically(path, lambda handle: torch.save(plain, handle))


def load_checkpoint(path: str | os.PathLike, map_location: Any = None) -> dict[str, Any]:
    """Read a checkpoint without unpickling objects; a file that needs more is refused."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such checkpoint file")
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise UnsafeCheckpointError(
            f"{path}: not a safe ltrain checkpoint (it cannot be read as plain data: {reason})"
        ) from None
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise UnsafeCheckpointError(f"{path}: not an ltrain checkpoint (no 'state_dict' in it)")
    return checkpoint
