"""Giving each rank of a data-parallel run its own share of a loader's samples.

`TensorLoader` shards itself (`shard`). A `torch.utils.data.DataLoader` with the standard samplers
is rebuilt around a `DistributedSampler` (shuffling if the loader shuffled, seeded from
`seed_everything`'s seed so every rank draws the same order), with every other setting kept.
Loaders that choose their samples themselves (a custom sampler, an iterable dataset, any other
iterable) are used as they are on every rank, with a warning, as nothing general can split them.
"""

from __future__ import annotations

import inspect
import os
import warnings
from typing import Any

from ltrain.data.loader import TensorLoader

# DataLoader arguments that the new sampler replaces rather than copies
_REPLACED = {"self", "dataset", "batch_size", "shuffle", "sampler", "batch_sampler", "drop_last"}


def shard_loader(loader: Any, rank: int, world_size: int, kind: str) -> Any:
    """`loader` as rank `rank` of `world_size` should read it (`kind`: train, val, test, predict)."""
    if isinstance(loader, TensorLoader):
        return loader.shard(rank, world_size)
    from torch.utils.data import (
        BatchSampler,
        DataLoader,
        DistributedSampler,
        IterableDataset,
        RandomSampler,
        SequentialSampler,
    )

    if not isinstance(loader, DataLoader):
        _warn_unsharded(kind, f"a {type(loader).__name__}")
        return loader
    if isinstance(loader.sampler, DistributedSampler):
        return loader
    if isinstance(loader.dataset, IterableDataset):
        _warn_unsharded(kind, "a DataLoader over an IterableDataset")
        return loader
    standard_batches = type(loader.batch_sampler) is BatchSampler
    if not standard_batches or type(loader.sampler) not in (RandomSampler, SequentialSampler):
        _warn_unsharded(
            kind, f"a DataLoader with a custom sampler ({type(loader.sampler).__name__})"
        )
        return loader
    sampler: DistributedSampler = DistributedSampler(
        loader.dataset,
        num_replicas=world_size,
        rank=rank,
        shuffle=isinstance(loader.sampler, RandomSampler),
        seed=int(os.environ.get("PL_GLOBAL_SEED", 0)),
    )
    kept = {
        name: getattr(loader, name)
        for name in inspect.signature(DataLoader.__init__).parameters
        if name not in _REPLACED and hasattr(loader, name)
    }
    if not kept.get("num_workers"):
        kept.pop("prefetch_factor", None)  # only valid with worker processes
    if type(loader) is not DataLoader:
        warnings.warn(
            f"The {kind} loader, a {type(loader).__name__}, is rebuilt as a plain DataLoader with "
            "a DistributedSampler (its own arguments are kept); behaviour its class adds is lost.",
            stacklevel=3,
        )
    return DataLoader(
        loader.dataset,
        batch_size=loader.batch_size,
        sampler=sampler,
        drop_last=loader.drop_last,
        **kept,
    )


def _warn_unsharded(kind: str, what: str) -> None:
    warnings.warn(
        f"The {kind} data is {what}, which ltrain cannot split between processes: every rank "
        "reads all of it. Use a TensorLoader, a DataLoader with a standard sampler, or a "
        "DistributedSampler of your own.",
        stacklevel=4,
    )
