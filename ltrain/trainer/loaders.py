"""Where a run's batches come from: finding the loaders, counting their batches, moving a batch to the device.

Loaders come from the `fit`/`validate`/... arguments, else the datamodule, else the module's own
`*_dataloader` methods (Lightning's order). Batch counts are fixed once per run from the
`limit_*_batches` arguments, so the loops and the progress bar agree on them.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

import torch

from ltrain.data.datamodule import DataModule
from ltrain.data.loader import TensorLoader
from ltrain.errors import MisconfigurationException
from ltrain.module import Module
from ltrain.trainer.hooks import overrides
from ltrain.utilities.combined_loader import CombinedLoader

if TYPE_CHECKING:
    from ltrain.trainer.trainer import Trainer

_STAGE_LOADER = {"fit": "train", "validate": "val", "test": "test", "predict": "predict"}
_END = object()


def load_loaders(
    trainer: Trainer, stage: str, model: Module, datamodule: DataModule | None, given: tuple
) -> None:
    """Find the stage's loaders, shard them for this process, and count their batches.

    For fit, only check that there is training data and note where the loaders come from: the
    loop asks for them when Lightning does (`load_val_loaders`, `load_train_loader`).
    """
    if stage == "fit":
        if not _has_source("train", model, datamodule, given[0]):
            raise MisconfigurationException(
                "fit() needs training data: pass train_dataloaders, a datamodule, or define "
                "`train_dataloader()` in the module."
            )
        validates = overrides(model, "validation_step", Module)
        if validates and not _has_source("val", model, datamodule, given[1]):
            warnings.warn(
                "You defined a validation_step but have no val_dataloader. Skipping val loop.",
                stacklevel=5,  # the user's fit() call
            )
        # without a validation_step the val loaders are never asked for, as in Lightning
        val = given[1] if validates else None
        trainer._fit_sources = FitSources(model, datamodule, given[0], val, validates)
        trainer.train_dataloader, trainer.num_training_batches = None, 0
        trainer.val_dataloaders, trainer.num_val_batches = None, []
        return
    kind = _STAGE_LOADER[stage]
    step_name = {"validate": "validation_step", "test": "test_step"}.get(stage)
    if step_name is not None and not overrides(model, step_name, Module):
        raise MisconfigurationException(
            f"Trainer.{stage}() needs `{step_name}` to be defined in {type(model).__name__}."
        )
    source = loader_source(kind, model, datamodule, given[0])
    if source is None:
        raise MisconfigurationException(
            f"Trainer.{stage}() needs data: pass dataloaders, a datamodule, or define "
            f"`{kind}_dataloader()` in the module."
        )
    found = [_shard(trainer, loader, kind) for loader in as_loader_list(source)]
    limit = getattr(trainer, f"limit_{kind}_batches")
    counts = [num_batches(loader, limit, kind) for loader in found]
    setattr(trainer, f"{kind}_dataloaders", _as_given(source, found))
    setattr(trainer, f"num_{kind}_batches", counts)


@dataclass
class FitSources:
    """Where a fit's loaders come from until the loop asks for them, in Lightning's order: the
    validation loaders for the sanity check (else before on_train_start), the training loader
    after the check; `trainer.estimated_stepping_batches` asks for it earlier when called.

    With `reload_dataloaders_every_n_epochs=N`, Lightning asks again for the training loader at
    the start of an epoch N or more epochs after the epoch it was last asked for in, and for the
    validation loaders when a validation starts N or more epochs after the last validation epoch
    they were asked for in (a sanity check in an epoch that does not validate does not count).
    """

    model: Module
    datamodule: DataModule | None
    train: Any  # the train_dataloaders given to fit(), or None
    val: Any  # the val_dataloaders given to fit(), or None
    validates: bool  # the module has a validation_step (else no val loader is asked for)
    train_loaded_in: float = -math.inf  # the epoch the training loader was last asked for in
    val_loaded: bool = False
    val_loaded_in: float = -math.inf  # the last validation epoch the val loaders were asked for in


def _reload_due(trainer: Trainer, loaded_in: float) -> bool:
    every = trainer.reload_dataloaders_every_n_epochs
    return bool(every and trainer.current_epoch - loaded_in >= every)


def load_train_loader(trainer: Trainer) -> bool:
    """Ask for the fit's training loader (once, or again when a reload is due), shard it and
    count its batches; whether it was asked for."""
    sources = trainer._fit_sources
    if sources is None:
        return False
    reload = sources.train_loaded_in > -math.inf
    if reload and not _reload_due(trainer, sources.train_loaded_in):
        return False
    sources.train_loaded_in = trainer.current_epoch
    train = loader_source("train", sources.model, sources.datamodule, sources.train)
    if train is None:
        raise MisconfigurationException(
            "fit() needs training data: train_dataloader() returned None; return a loader."
        )
    if isinstance(train, (list, tuple, Mapping, CombinedLoader)):
        trainer.train_dataloader = _combined_training_batches(trainer, train)
    else:
        if trainer.overfit_batches:
            train = _without_shuffle(train)
        trainer.train_dataloader = _shard(trainer, train, "train")
    trainer.num_training_batches = num_batches(
        trainer.train_dataloader, trainer.limit_train_batches, "train"
    )
    if reload:
        # Lightning makes an iterator of a reloaded loader when it gets it, and the epoch makes
        # another: that first one draws its seed from torch's generator, so it is made here too
        iter(trainer.train_dataloader)
    return True


class CombinedBatches:
    """Several training loaders as one: the batches of a CombinedLoader, in its structure."""

    def __init__(self, combined: CombinedLoader) -> None:
        self.combined = combined

    def __iter__(self) -> Iterator[Any]:
        return (batch for batch, _, _ in self.combined)

    def __len__(self) -> int:
        return len(self.combined)

    def set_epoch(self, epoch: int) -> None:
        for loader in self.combined.flattened:
            set_loader_epoch(loader, epoch)


def _combined_training_batches(trainer: Trainer, train: Any) -> CombinedBatches:
    """A list or dict of training loaders walked as Lightning walks them ("max_size_cycle", or
    the mode of a CombinedLoader given), each loader sharded for this process."""
    combined = (
        train if isinstance(train, CombinedLoader) else CombinedLoader(train, "max_size_cycle")
    )
    if combined.mode == "sequential":
        raise MisconfigurationException(
            'fit does not support the `CombinedLoader(mode="sequential")` mode. The available '
            "modes are: ['min_size', 'max_size_cycle', 'max_size']"
        )
    loaders = combined.flattened
    if trainer.overfit_batches:
        loaders = [_without_shuffle(loader) for loader in loaders]
    combined.flattened = [_shard(trainer, loader, "train") for loader in loaders]
    return CombinedBatches(combined)


def load_val_loaders(trainer: Trainer, reload: bool = False) -> None:
    """Ask for the fit's validation loaders (once; with `reload`, again when a reload is due),
    shard them and count their batches."""
    sources = trainer._fit_sources
    if sources is None or not sources.validates:
        return
    if sources.val_loaded and not (reload and _reload_due(trainer, sources.val_loaded_in)):
        return
    sources.val_loaded = True
    if validation_epoch(trainer):
        sources.val_loaded_in = trainer.current_epoch
    val = loader_source("val", sources.model, sources.datamodule, sources.val)
    vals = [_shard(trainer, v, "val") for v in as_loader_list(val)]
    trainer.val_dataloaders = _as_given(val, vals)
    trainer.num_val_batches = [num_batches(v, trainer.limit_val_batches, "val") for v in vals]


def validation_epoch(trainer: Trainer) -> bool:
    """Whether the current epoch validates (check_val_every_n_epoch)."""
    every = trainer.check_val_every_n_epoch
    return every is None or (trainer.current_epoch + 1) % every == 0


def may_validate(trainer: Trainer) -> bool:
    """Whether the fit has validation batches, or validation loaders not asked for yet (the
    first validation asks for them, as in Lightning)."""
    sources = trainer._fit_sources
    if sources is not None and sources.validates and not sources.val_loaded:
        return True
    return bool(sum(trainer.num_val_batches))


def _shard(trainer: Trainer, loader: Any, kind: str) -> Any:
    """This process's share of `loader`; with `use_distributed_sampler=False`, the loader as given
    (its own sampler decides what each process reads, as in Lightning)."""
    return (
        trainer.strategy.shard_loader(loader, kind) if trainer.use_distributed_sampler else loader
    )


def _has_source(kind: str, model: Module, datamodule: DataModule | None, given: Any) -> bool:
    """Whether `loader_source` would find a loader, without asking for it."""
    method = f"{kind}_dataloader"
    return (
        given is not None
        or (datamodule is not None and overrides(datamodule, method, DataModule))
        or callable(getattr(model, method, None))
    )


def loader_source(kind: str, model: Module, datamodule: DataModule | None, given: Any) -> Any:
    if given is not None:
        return given
    method = f"{kind}_dataloader"
    if datamodule is not None and overrides(datamodule, method, DataModule):
        return getattr(datamodule, method)()
    if callable(getattr(model, method, None)):
        return getattr(model, method)()
    return None


def as_loader_list(loaders: Any) -> list[Any]:
    """None is no loader, a list, tuple or dict holds several (a dict's in its order, numbered
    like a list's, as Lightning runs them), anything else is one."""
    if loaders is None:
        return []
    if isinstance(loaders, (list, tuple)):
        return list(loaders)
    if isinstance(loaders, Mapping):
        return list(loaders.values())
    return [loaders]


def _as_given(given: Any, loaders: list[Any]) -> Any:
    """The loaders in the structure they came in (one, a list, a dict), as Lightning's trainer
    shows them in `val_dataloaders` & co.; None when there are none."""
    if isinstance(given, Mapping):
        return dict(zip(given, loaders, strict=True))
    if isinstance(given, (list, tuple)):
        return loaders
    return loaders[0] if loaders else None


def num_batches(loader: Any, limit: int | float, kind: str) -> int | float:
    """The batches a loop takes from `loader` under `limit_{kind}_batches` (inf without a length)."""
    try:
        length: int | float = len(loader)
    except TypeError:
        length = math.inf
    if isinstance(limit, int) and not isinstance(limit, bool):
        return min(length, limit)
    if limit == 1.0:
        return length
    if length == math.inf:
        raise MisconfigurationException(
            f"limit_{kind}_batches={limit} is a fraction, but the {kind} loader has no length; "
            "use an int number of batches."
        )
    count = int(length * limit)
    if limit > 0 and count == 0:
        raise MisconfigurationException(
            f"limit_{kind}_batches={limit} of {length} batches is less than one batch; "
            "increase it or use an int."
        )
    return count


def set_loader_epoch(loader: Any, epoch: int) -> None:
    """Give the loader (or its sampler) the epoch, so each epoch shuffles differently but reproducibly."""
    for candidate in (
        loader,
        getattr(loader, "sampler", None),
        getattr(loader, "batch_sampler", None),
    ):
        set_epoch = getattr(candidate, "set_epoch", None)
        if callable(set_epoch):
            set_epoch(epoch)
            return


def _without_shuffle(loader: Any) -> Any:
    """The same data in a fixed order (for overfit_batches)."""
    if isinstance(loader, TensorLoader):
        return TensorLoader(
            *loader.tensors, batch_size=loader.batch_size, shuffle=False, drop_last=loader.drop_last
        )
    if isinstance(loader, torch.utils.data.DataLoader) and isinstance(
        loader.sampler, torch.utils.data.RandomSampler
    ):
        return torch.utils.data.DataLoader(
            loader.dataset,
            batch_size=loader.batch_size,
            shuffle=False,
            num_workers=loader.num_workers,
            collate_fn=loader.collate_fn,
            pin_memory=loader.pin_memory,
            drop_last=loader.drop_last,
        )
    return loader


class BatchTransfer(NamedTuple):
    """The hooks a batch passes on its way to the device, fixed once per run."""

    before: Any  # on_before_batch_transfer, or None when nobody overrides it
    transfer: Any  # the module's transfer_batch_to_device
    after: Any  # on_after_batch_transfer, or None


def batch_transfer_hooks(model: Module, datamodule: DataModule | None) -> BatchTransfer:
    """Lightning's rule: a datamodule's batch hook wins over the module's; unset hooks are skipped."""

    def pick(name: str) -> Any:
        if datamodule is not None and overrides(datamodule, name, DataModule):
            return getattr(datamodule, name)
        if overrides(model, name, Module):
            return getattr(model, name)
        return None

    return BatchTransfer(
        pick("on_before_batch_transfer"),
        pick("transfer_batch_to_device") or model.transfer_batch_to_device,
        pick("on_after_batch_transfer"),
    )


def to_device(trainer: Trainer, batch: Any, dataloader_idx: int) -> Any:
    """The batch through the transfer hooks to the run's device, in the precision's dtype."""
    before, transfer, after = trainer._batch_transfer
    if before is not None:
        batch = before(batch, dataloader_idx)
    batch = transfer(batch, trainer.strategy.root_device, dataloader_idx)
    if after is not None:
        batch = after(batch, dataloader_idx)
    return trainer.precision_plugin.convert_input(batch)


def with_last_flag(
    batches: Iterator[Any], limit: int | float, start: int = 0
) -> Iterator[tuple[int, Any, bool]]:
    """Yield (index, batch, is_last) from `start` until `limit`.

    With a known number of batches the next one is fetched only after this one's step, as
    Lightning does: a loader that draws random numbers (augmentations, a restarted iterator) draws
    them at the same point of the run. Without one, the loop looks one batch ahead.
    """
    if limit <= start:
        return
    if limit != math.inf:
        for index in range(start, int(limit)):
            batch = next(batches, _END)
            if batch is _END:
                return
            yield index, batch, index + 1 >= limit
        return
    batch = next(batches, _END)
    index = start
    while batch is not _END:
        following = _END if index + 1 >= limit else next(batches, _END)
        yield index, batch, following is _END
        batch = following
        index += 1


def iterate_from(loader: Any, epoch: int, start: int) -> Iterator[Any]:
    """An iterator over `loader`'s pass of `epoch` that begins at batch `start`.

    A TensorLoader's order depends on its seed and the epoch alone, so it starts there itself and
    reads no batch before it; any other loader's earlier batches are drawn and dropped.
    """
    if start and isinstance(loader, TensorLoader):
        loader.load_state_dict({"epoch": epoch, "batches_yielded": start})
        return iter(loader)
    batches = iter(loader)
    for _ in range(start):  # trained before the checkpoint
        next(batches, None)
    return batches


def sample_indices(loader: Any) -> list[int] | None:
    """The data set indices a sharded loader visits, in order (None when it is not sharded)."""
    if isinstance(loader, TensorLoader):
        order = loader._order(loader.epoch)
        return list(range(loader.num_samples)) if order is None else order.tolist()
    from torch.utils.data import DistributedSampler

    sampler = getattr(loader, "sampler", None)
    if isinstance(sampler, DistributedSampler):
        return list(iter(sampler))
    return None
