"""`BasePredictionWriter`: write predictions per batch, per predict epoch, or both.

The predict loop tells each writer which samples a batch holds (`batch_indices`, the indices its
batch sampler drew) and, for an epoch writer, keeps every loader's predictions until the epoch
ends, as Lightning does; with `return_predictions=False` and only batch writers nothing is kept.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING, Any, Literal

from torch.utils.data import DataLoader

from ltrain.callbacks.base import Callback
from ltrain.data.loader import TensorLoader
from ltrain.errors import MisconfigurationException

if TYPE_CHECKING:
    from ltrain.module import Module
    from ltrain.trainer.trainer import Trainer


class WriteInterval(Enum):
    """When a `BasePredictionWriter` writes."""

    BATCH = "batch"
    EPOCH = "epoch"
    BATCH_AND_EPOCH = "batch_and_epoch"

    @property
    def on_batch(self) -> bool:
        return self in (WriteInterval.BATCH, WriteInterval.BATCH_AND_EPOCH)

    @property
    def on_epoch(self) -> bool:
        return self in (WriteInterval.EPOCH, WriteInterval.BATCH_AND_EPOCH)


@dataclass
class PredictionRecord:
    """What the predict loop shows the writers: the current batch's sample indices, every
    loader's batch indices so far (loaders x batches x samples) and the kept predictions."""

    current_batch_indices: list[int] = field(default_factory=list)
    epoch_batch_indices: list[list[list[int]]] = field(default_factory=list)
    predictions: list[list[Any]] = field(default_factory=list)

    def epoch_predictions(self) -> list[Any]:
        """One loader's predictions as a list of batches; several loaders' as a list of those."""
        return self.predictions[0] if len(self.predictions) == 1 else self.predictions


class BasePredictionWriter(Callback):
    """Subclass it and override `write_on_batch_end` and/or `write_on_epoch_end`."""

    def __init__(
        self, write_interval: Literal["batch", "epoch", "batch_and_epoch"] = "batch"
    ) -> None:
        valid = [interval.value for interval in WriteInterval]
        if write_interval not in valid:
            raise MisconfigurationException(
                f"`write_interval` should be one of {valid}, got {write_interval!r}."
            )
        self.interval = WriteInterval(write_interval)
        self._record = PredictionRecord()

    def write_on_batch_end(
        self,
        trainer: Trainer,
        pl_module: Module,
        prediction: Any,
        batch_indices: Sequence[int] | None,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int,
    ) -> None:
        """Override with the logic to write one batch's prediction."""
        raise NotImplementedError()

    def write_on_epoch_end(
        self,
        trainer: Trainer,
        pl_module: Module,
        predictions: Sequence[Any],
        batch_indices: Sequence[Any],
    ) -> None:
        """Override with the logic to write every batch's prediction."""
        raise NotImplementedError()

    def on_predict_batch_end(
        self,
        trainer: Trainer,
        pl_module: Module,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if self.interval.on_batch:
            indices = self._record.current_batch_indices
            self.write_on_batch_end(
                trainer, pl_module, outputs, indices, batch, batch_idx, dataloader_idx
            )

    def on_predict_epoch_end(self, trainer: Trainer, pl_module: Module) -> None:
        if self.interval.on_epoch:
            record = self._record
            predictions = record.epoch_predictions()
            self.write_on_epoch_end(trainer, pl_module, predictions, record.epoch_batch_indices)


class _RecordingBatchSampler:
    """A batch sampler that notes each batch of indices it hands out."""

    def __init__(self, batch_sampler: Any) -> None:
        self.batch_sampler = batch_sampler
        self.seen: list[list[int]] = []

    def __len__(self) -> int:
        return len(self.batch_sampler)

    def __iter__(self) -> Iterator[list[int]]:
        self.seen = []
        for indices in self.batch_sampler:
            self.seen.append(list(indices))
            yield indices


def indexed_loader(loader: Any) -> tuple[Any, Any]:
    """`loader` as the predict loop iterates it, and a function of the batch number giving that
    batch's sample indices (None when the loader does not say which samples it draws)."""
    if isinstance(loader, TensorLoader):
        order = list(range(len(loader.tensors[0])))
        if loader.shuffle or loader.num_replicas > 1:
            order = loader._order(loader.epoch).tolist()  # type: ignore[union-attr]
        size = loader.batch_size
        return loader, lambda batch_idx: order[batch_idx * size : (batch_idx + 1) * size]
    if type(loader) is not DataLoader or loader.batch_sampler is None:
        return loader, lambda batch_idx: None
    recorder = _RecordingBatchSampler(loader.batch_sampler)
    workers = loader.num_workers
    rebuilt = DataLoader(
        loader.dataset,
        batch_sampler=recorder,
        num_workers=workers,
        collate_fn=loader.collate_fn,
        pin_memory=loader.pin_memory,
        timeout=loader.timeout,
        worker_init_fn=loader.worker_init_fn,
        multiprocessing_context=loader.multiprocessing_context,
        generator=loader.generator,
        prefetch_factor=loader.prefetch_factor if workers else None,
        persistent_workers=loader.persistent_workers,
        pin_memory_device=loader.pin_memory_device,
    )
    return rebuilt, lambda batch_idx: recorder.seen[batch_idx]
