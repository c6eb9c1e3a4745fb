"""LearningRateFinder: ltrain's learning-rate sweep (`ltrain.tuner.lr_find`) as a callback.

At the start of fit it sweeps the rate on the fit's own data, puts the weights and generators
back, and with `update_attr` sets the module's `lr` (or `attr_name`) and the configured
optimizers' rates to the suggestion, so training goes on with it, as in Lightning. The finder,
with its results, suggestion and plot, is `optimal_lr`.
"""

from __future__ import annotations

from typing import Any

from ltrain.callbacks.base import Callback


class LearningRateFinder(Callback):
    """Lightning's LearningRateFinder: `lr_find(trainer, pl_module)` runs at on_fit_start;
    override on_fit_start/on_train_epoch_start to run it elsewhere (e.g. when fine-tuning)."""

    SUPPORTED_MODES = ("linear", "exponential")

    def __init__(
        self,
        min_lr: float = 1e-8,
        max_lr: float = 1,
        num_training_steps: int = 100,
        mode: str = "exponential",
        early_stop_threshold: float | None = 4.0,
        update_attr: bool = True,
        attr_name: str = "",
    ) -> None:
        mode = mode.lower()
        if mode not in self.SUPPORTED_MODES:
            raise ValueError(
                f"LearningRateFinder mode={mode!r}: expected one of {self.SUPPORTED_MODES}"
            )
        self._min_lr, self._max_lr = min_lr, max_lr
        self._num_training_steps = num_training_steps
        self._mode = mode
        self._early_stop_threshold = early_stop_threshold
        self._update_attr, self._attr_name = update_attr, attr_name
        self.optimal_lr: Any = None

    def lr_find(self, trainer: Any, pl_module: Any) -> None:
        from ltrain.tuner import lr_find

        sources = trainer._fit_sources
        data = (sources.train, sources.val, sources.datamodule)
        self.optimal_lr = lr_find(
            trainer,
            pl_module,
            data,
            self._min_lr,
            self._max_lr,
            self._num_training_steps,
            self._mode,
            self._early_stop_threshold,
            self._update_attr,
            self._attr_name,
        )
        suggestion = self.optimal_lr.suggestion()
        if self._update_attr and suggestion is not None:
            for optimizer in trainer.optimizers:
                for group in optimizer.param_groups:
                    group["lr"] = suggestion

    def on_fit_start(self, trainer: Any, pl_module: Any) -> None:
        self.lr_find(trainer, pl_module)
