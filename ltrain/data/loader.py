"""`TensorLoader`: batches cut from whole in-memory tensors; it slices and never collates.

A DataLoader over a TensorDataset fetches one sample at a time in Python and stacks the results,
which for small data costs more than the model step. Here an unshuffled batch is a view
`t[i:i + batch_size]` and a shuffled batch is one indexing with a slice of a permutation drawn from
a private generator seeded with `seed + epoch`. The order therefore depends on the seed and the
epoch alone, so a run can stop mid-epoch and resume onto exactly the batches it had left.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import torch


class TensorLoader:
    """Yields tuples of batch tensors, like `DataLoader(TensorDataset(*tensors))`, without copies.

    The trainer calls `set_epoch` before each epoch (as with `DistributedSampler`); a loop that
    does not still gets a fresh shuffle each pass, because a completed pass advances `epoch`.
    A pass abandoned early leaves `epoch` where it was.
    """

    def __init__(
        self,
        *tensors: torch.Tensor,
        batch_size: int = 32,
        shuffle: bool = False,
        drop_last: bool = False,
        seed: int = 0,
    ) -> None:
        if not tensors:
            raise ValueError("TensorLoader needs at least one tensor")
        for i, t in enumerate(tensors):
            if not isinstance(t, torch.Tensor):
                raise ValueError(
                    f"TensorLoader: argument {i} is a {type(t).__name__}, not a tensor"
                )
            if t.dim() == 0:
                raise ValueError(f"TensorLoader: tensor {i} is 0-d; its first dim must be samples")
        lengths = [len(t) for t in tensors]
        if len(set(lengths)) > 1:
            raise ValueError(
                f"TensorLoader: tensors must hold the same number of samples, got lengths {lengths}"
            )
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"TensorLoader: batch_size must be an int >= 1, got {batch_size!r}")
        self.tensors: tuple[torch.Tensor, ...] = tensors
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.seed = seed
        # data-parallel runs: this process reads every `num_replicas`-th sample from `rank` on
        self.num_replicas = 1
        self.rank = 0
        self.epoch = 0
        # `_batches_yielded` is the position inside the pass of `epoch`; `_resume_at` is where the
        # next pass starts, non-zero only after `load_state_dict`.
        self._batches_yielded = 0
        self._resume_at = 0

    @property
    def num_samples(self) -> int:
        """Samples one pass yields (this rank's share, padded as DistributedSampler pads)."""
        return -(-len(self.tensors[0]) // self.num_replicas)

    def shard(self, rank: int, num_replicas: int) -> TensorLoader:
        """This loader as rank `rank` of `num_replicas` sees it (same tensors, no copies).

        Every rank draws the same permutation and takes every `num_replicas`-th index of it, so
        batch i of all ranks together holds the samples of batch i of one process with a batch
        `num_replicas` times larger. The last samples are repeated from the start when the data
        does not divide evenly, so every rank runs the same number of steps.
        """
        if not 0 <= rank < num_replicas:
            raise ValueError(f"TensorLoader.shard: rank {rank} is not in [0, {num_replicas})")
        sharded = copy.copy(self)
        sharded.rank, sharded.num_replicas = rank, num_replicas
        return sharded

    def __len__(self) -> int:
        if self.drop_last:
            return self.num_samples // self.batch_size
        return -(-self.num_samples // self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        """Pick the permutation of the next pass; keeps a loaded resume point of the same epoch."""
        if epoch != self.epoch:
            self._resume_at = 0
            self._batches_yielded = 0
        self.epoch = epoch

    def _permutation(self, epoch: int) -> torch.Tensor:
        # A private generator: the order must not depend on who else drew from the global RNG.
        generator = torch.Generator().manual_seed(self.seed + epoch)
        return torch.randperm(len(self.tensors[0]), generator=generator)

    def _order(self, epoch: int) -> torch.Tensor | None:
        """The sample indices of this pass, or None for all samples in order (sliced, no copy)."""
        if not self.shuffle and self.num_replicas == 1:
            return None
        n = len(self.tensors[0])
        order = self._permutation(epoch) if self.shuffle else torch.arange(n)
        if self.num_replicas > 1:
            total = self.num_samples * self.num_replicas
            if total > n:
                order = order.repeat(-(-total // n))[:total]
            order = order[self.rank : total : self.num_replicas]
        return order

    def __iter__(self) -> Iterator[tuple[torch.Tensor, ...]]:
        start, self._resume_at = self._resume_at, 0
        self._batches_yielded = start
        return self._batches(self.epoch, start)

    def _batches(self, epoch: int, start: int) -> Iterator[tuple[torch.Tensor, ...]]:
        bs = self.batch_size
        tensors = self.tensors
        order = self._order(epoch)
        if order is not None:
            # One copy of the order per device, made once per pass rather than per batch.
            on_device = {t.device: order.to(t.device) for t in tensors}
            orders = [on_device[t.device] for t in tensors]
        for b in range(start, len(self)):
            lo, hi = b * bs, (b + 1) * bs
            # list comprehensions, not generators: this runs once per training step
            if order is not None:
                batch = tuple([t[o[lo:hi]] for t, o in zip(tensors, orders, strict=True)])
            else:
                batch = tuple([t[lo:hi] for t in tensors])
            # Counted before the yield: while the caller holds batch b, state_dict says b + 1.
            self._batches_yielded = b + 1
            yield batch
        self.epoch = epoch + 1
        self._batches_yielded = 0

    def state_dict(self) -> dict[str, Any]:
        """Where the current pass stands, for exact mid-epoch resume."""
        return {"epoch": self.epoch, "batches_yielded": self._batches_yielded}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Make the next pass continue the saved one, skipping the batches it already yielded."""
        epoch = int(state_dict["epoch"])
        yielded = int(state_dict["batches_yielded"])
        if not 0 <= yielded <= len(self):
            raise ValueError(
                f"TensorLoader.load_state_dict: batches_yielded must be in [0, {len(self)}], "
                f"got {yielded}"
            )
        self.epoch = epoch
        self._batches_yielded = yielded
        self._resume_at = yielded
