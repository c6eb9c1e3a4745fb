"""Nested batches: apply a function to every tensor in one, find its size.

Batches are whatever a loader yields: tensors, tuples, lists, named tuples, dicts, nested.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch

from ltrain.errors import MisconfigurationException


def apply_to_tensors(batch: Any, fn: Callable[[torch.Tensor], torch.Tensor]) -> Any:
    """A copy of `batch` with `fn` applied to every tensor; other values pass through."""
    if isinstance(batch, torch.Tensor):
        return fn(batch)
    if isinstance(batch, tuple) and hasattr(batch, "_fields"):
        return type(batch)(*(apply_to_tensors(b, fn) for b in batch))
    if isinstance(batch, (list, tuple)):
        return type(batch)(apply_to_tensors(b, fn) for b in batch)
    if isinstance(batch, Mapping):
        mapping_type: Any = type(batch)
        return mapping_type({k: apply_to_tensors(v, fn) for k, v in batch.items()})
    return batch


def to_tensors(data: Any, device: torch.device) -> Any:
    """A copy of `data` with its numbers and numpy arrays as tensors, every tensor on `device`
    (bool -> uint8, int -> int32, float -> float32, as Lightning converts them to gather)."""
    if isinstance(data, torch.Tensor):
        return data.to(device)
    if isinstance(data, (bool, int, float)):
        dtype = {bool: torch.uint8, int: torch.int}.get(type(data), torch.float)
        return torch.tensor(data, dtype=dtype, device=device)
    if type(data).__module__ == "numpy" and type(data).__name__ == "ndarray":
        return torch.from_numpy(data).to(device)
    if isinstance(data, tuple) and hasattr(data, "_fields"):
        return type(data)(*(to_tensors(d, device) for d in data))
    if isinstance(data, (list, tuple)):
        return type(data)(to_tensors(d, device) for d in data)
    if isinstance(data, Mapping):
        mapping_type: Any = type(data)
        return mapping_type({k: to_tensors(v, device) for k, v in data.items()})
    return data


def move_to_device(batch: Any, device: torch.device) -> Any:
    """`batch` with every tensor on `device` (asynchronous copies from pinned memory)."""
    # tensors already there pass untouched: even a no-op `.to()` costs a dispatch per tensor
    if type(batch) in (tuple, list):  # the usual (x, y): a loop, cheaper than all() over a genexpr
        for t in batch:
            if not isinstance(t, torch.Tensor) or t.device != device:
                break
        else:
            return batch
    return apply_to_tensors(
        batch, lambda t: t if t.device == device else t.to(device, non_blocking=True)
    )


def infer_batch_size(batch: Any) -> int:
    """Lightning's rule: the length of the first tensor found in the batch (1 for a 0-d one),
    looking through mappings, dataclasses and any other iterable but strings; no batch (an
    epoch-end hook) counts 1, and a batch without a tensor is refused, as in Lightning."""
    if type(batch) in (tuple, list) and batch and isinstance(batch[0], torch.Tensor):
        first = batch[0]  # the usual (x, y): answered without the recursive walk
        return len(first) if first.dim() else 1
    if batch is None:
        return 1
    size = _first_tensor_length(batch)
    if size is None:
        raise MisconfigurationException(
            "We could not infer the batch_size from the batch. Either simplify its structure or "
            "provide the batch_size as `self.log(..., batch_size=batch_size)`."
        )
    return size


def _first_tensor_length(batch: Any) -> int | None:
    if isinstance(batch, torch.Tensor):
        return int(batch.shape[0]) if batch.dim() > 0 else 1
    if isinstance(batch, str):
        return None
    if isinstance(batch, Mapping):
        items: Iterable[Any] = batch.values()
    elif dataclasses.is_dataclass(batch) and not isinstance(batch, type):
        items = (getattr(batch, field.name) for field in dataclasses.fields(batch))
    elif isinstance(batch, Iterable):
        items = batch
    else:
        return None
    for item in items:
        size = _first_tensor_length(item)
        if size is not None:
            return size
    return None


def split_samples(batch: Any) -> list[Any] | None:
    """`batch` cut into one entry per sample (tensors along dim 0), or None if it cannot be.

    Nested tuples, lists and dicts are cut alongside, so `stack_samples` puts a batch back together.
    """
    if isinstance(batch, torch.Tensor):
        return list(batch.unbind(0)) if batch.dim() > 0 else None
    if isinstance(batch, Mapping):
        keys = list(batch)
        parts = [split_samples(batch[key]) for key in keys]
    elif isinstance(batch, (list, tuple)):
        parts = [split_samples(item) for item in batch]
    else:
        return None
    columns = [c for c in parts if c is not None]
    if not columns or len(columns) != len(parts) or len({len(c) for c in columns}) != 1:
        return None
    rows = zip(*columns, strict=True)
    if isinstance(batch, Mapping):
        return [dict(zip(keys, row, strict=True)) for row in rows]
    return [_same_sequence(batch, row) for row in rows]


def stack_samples(samples: list[Any]) -> Any:
    """The inverse of `split_samples`: one batch from a list of per-sample entries."""
    first = samples[0]
    if isinstance(first, torch.Tensor):
        return torch.stack(samples)
    if isinstance(first, Mapping):
        return {key: stack_samples([s[key] for s in samples]) for key in first}
    return _same_sequence(first, [stack_samples(list(c)) for c in zip(*samples, strict=True)])


def _same_sequence(like: Any, items: Any) -> Any:
    """A list, tuple or named tuple of `like`'s type holding `items`."""
    if isinstance(like, tuple) and hasattr(like, "_fields"):
        return type(like)(*items)
    return type(like)(items)
