"""Lightning's tuner: `Tuner(trainer).lr_find(model, ...)` (ltrain/callbacks/lr_finder.py) and
`Tuner(trainer).scale_batch_size(model, ...)` (ltrain/callbacks/batch_size_finder.py).
"""

from __future__ import annotations

from typing import Any

from ltrain.callbacks.batch_size_finder import BatchSizeFinder, check_margin
from ltrain.callbacks.lr_finder import LearningRateFinder, LRFinder, lr_find
from ltrain.errors import MisconfigurationException

__all__ = ["LRFinder", "Tuner"]


class Tuner:
    """Lightning's tuner entry point: `Tuner(trainer).lr_find(model, ...)` and
    `Tuner(trainer).scale_batch_size(model, ...)`."""

    def __init__(self, trainer: Any) -> None:
        self._trainer = trainer

    def scale_batch_size(
        self,
        model: Any,
        train_dataloaders: Any = None,
        val_dataloaders: Any = None,
        dataloaders: Any = None,
        datamodule: Any = None,
        method: str = "fit",
        mode: str = "power",
        steps_per_trial: int = 3,
        init_val: int = 2,
        max_trials: int = 25,
        batch_arg_name: str = "batch_size",
        margin: float = 0.05,
        max_val: int = 8192,
    ) -> int | None:
        """The largest batch size that runs `method` without running out of memory; the model's
        (or datamodule's) `batch_arg_name` is set to it. The trainer's run ends after the search."""
        _check_data(train_dataloaders, val_dataloaders, dataloaders, method)
        trainer = self._trainer
        if trainer.strategy.distributed:
            raise ValueError(
                "scale_batch_size runs in one process: find the batch size with devices=1, then "
                "train with several"
            )
        _check_not_configured(trainer, BatchSizeFinder)
        check_margin(margin)
        finder = BatchSizeFinder(
            mode, steps_per_trial, init_val, max_trials, batch_arg_name, margin, max_val
        )
        finder._early_exit = True
        trainer.callbacks = [finder, *trainer.callbacks]
        try:
            if method == "fit":
                trainer.fit(model, train_dataloaders, val_dataloaders, datamodule)
            else:
                getattr(trainer, method)(model, dataloaders, datamodule=datamodule)
        finally:
            trainer.callbacks = [c for c in trainer.callbacks if c is not finder]
        return finder.optimal_batch_size

    def lr_find(
        self,
        model: Any,
        train_dataloaders: Any = None,
        val_dataloaders: Any = None,
        dataloaders: Any = None,
        datamodule: Any = None,
        method: str = "fit",
        min_lr: float = 1e-8,
        max_lr: float = 1.0,
        num_training: int = 100,
        mode: str = "exponential",
        early_stop_threshold: float | None = 4.0,
        update_attr: bool = True,
        attr_name: str = "",
    ) -> LRFinder:
        """Sweep the learning rate; with `update_attr`, set the model's `lr` to the suggestion."""
        if method != "fit":
            raise MisconfigurationException(
                f"lr_find method={method!r}: 'fit' is the only valid one"
            )
        _check_data(train_dataloaders, val_dataloaders, dataloaders, method)
        _check_not_configured(self._trainer, LearningRateFinder)
        data = (train_dataloaders, val_dataloaders, datamodule)
        return lr_find(
            self._trainer,
            model,
            data,
            min_lr,
            max_lr,
            num_training,
            mode,
            early_stop_threshold,
            update_attr,
            attr_name,
        )


METHODS = ("fit", "validate", "test", "predict")


def _check_data(train: Any, val: Any, dataloaders: Any, method: str) -> None:
    if method not in METHODS:
        raise ValueError(f"Tuner method={method!r}: expected one of {METHODS}")
    if method == "fit" and dataloaders is not None:
        raise MisconfigurationException(
            "Tuner with method='fit' takes train_dataloaders and val_dataloaders, not dataloaders"
        )
    if method != "fit" and (train is not None or val is not None):
        raise MisconfigurationException(
            f"Tuner with method={method!r} takes dataloaders, not train_dataloaders or "
            "val_dataloaders"
        )


def _check_not_configured(trainer: Any, kind: type) -> None:
    if any(isinstance(callback, kind) for callback in trainer.callbacks):
        raise ValueError(
            f"Trainer is already configured with a `{kind.__name__}` callback: remove it to use "
            "the Tuner."
        )
