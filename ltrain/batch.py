"""Nested batches: apply a function to every tensor in one, find its size.

Batches are whatever a loader yields: tensors, tuples, lists, named tuples, dicts, nested.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch


def apply_to_tensors(batch: Any, fn: Callable[[torch.Tensor], torch.Tensor]) -> Any:
    """A copy of `batch` with `fn` applied to every tensor; other values pass through."""
    if isinstance(batch, torch.Tensor):
        return fn(batch)
    if isinstance(batch, tuple) and hasattr(batch, "_fields"):
        return type(batch)(*(apply_to_tensors(b, fn) for b in batch))
    if isinstance(batch, (list, tuple)):
        return type(batch)(apply_to_tensors(b, fn) for b in batch)
    if isinstance(batch, Mapping):
        return type(batch)({k: apply_to_tensors(v, fn) for k, v in batch.items()})
    return batch


def move_to_device(batch: Any, device: torch.device) -> Any:
    """`batch` with every tensor on `device` (asynchronous copies from pinned memory)."""
    # tensors already there pass untouched: even a no-op `.to()` costs a dispatch per tensor
    return apply_to_tensors(
        batch, lambda t: t if t.device == device else t.to(device, non_blocking=True)
    )


def infer_batch_size(batch: Any) -> int:
    """Lightning's rule: the length of the first tensor in the batch, 1 when there is none."""
    size = _first_tensor_length(batch)
    return 1 if size is None else size


def _first_tensor_length(batch: Any) -> int | None:
    if isinstance(batch, torch.Tensor):
        return int(batch.shape[0]) if batch.dim() > 0 else 1
    if isinstance(batch, Mapping):
        batch = list(batch.values())
    if isinstance(batch, (list, tuple)):
        for item in batch:
            size = _first_tensor_length(item)
            if size is not None:
                return size
    return None
