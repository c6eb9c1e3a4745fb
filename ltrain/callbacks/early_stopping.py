"""`EarlyStopping`: stop when a monitored metric stops improving, with Lightning's rules.

It checks at the end of each training epoch when validation runs once per epoch (after that
validation), otherwise after each validation run during fit, and always says why it stopped.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from ltrain.callbacks.base import Callback
from ltrain.console import info
from ltrain.errors import MisconfigurationException

if TYPE_CHECKING:
    from ltrain.module import Module
    from ltrain.trainer.trainer import Trainer


class EarlyStopping(Callback):
    runs_after_module = True

    def __init__(
        self,
        monitor: str,
        min_delta: float = 0.0,
        patience: int = 3,
        verbose: bool = False,
        mode: str = "min",
        strict: bool = True,
        check_finite: bool = True,
        stopping_threshold: float | None = None,
        divergence_threshold: float | None = None,
        check_on_train_epoch_end: bool | None = None,
    ) -> None:
        if mode not in ("min", "max"):
            raise MisconfigurationException(f"EarlyStopping mode={mode!r}: expected 'min' or 'max'")
        if patience < 0:
            raise MisconfigurationException(f"EarlyStopping patience={patience}: expected >= 0")
        self.monitor = monitor
        self.min_delta = abs(min_delta)
        self.patience = patience
        self.verbose = verbose
        self.mode = mode
        self.strict = strict
        self.check_finite = check_finite
        self.stopping_threshold = stopping_threshold
        self.divergence_threshold = divergence_threshold
        self._check_on_train_epoch_end = check_on_train_epoch_end
        self.wait_count = 0
        self.stopped_epoch = 0
        self.best_score = math.inf if mode == "min" else -math.inf
        self.stopping_reason_message: str | None = None

    @property
    def state_key(self) -> str:
        return f"EarlyStopping{{'monitor': {self.monitor!r}, 'mode': {self.mode!r}}}"

    def state_dict(self) -> dict[str, Any]:
        return {
            "wait_count": self.wait_count,
            "stopped_epoch": self.stopped_epoch,
            "best_score": self.best_score,
            "patience": self.patience,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.wait_count = int(state_dict["wait_count"])
        self.stopped_epoch = int(state_dict["stopped_epoch"])
        self.best_score = float(state_dict["best_score"])
        self.patience = int(state_dict["patience"])

    def setup(self, trainer: Trainer, pl_module: Module, stage: str) -> None:
        if self._check_on_train_epoch_end is None:
            # validation once per epoch -> decide after it, at the epoch's end
            self._check_on_train_epoch_end = (
                trainer.val_check_interval == 1.0 and trainer.check_val_every_n_epoch == 1
            )

    def on_train_epoch_end(self, trainer: Trainer, pl_module: Module) -> None:
        if self._check_on_train_epoch_end and not self._skips(trainer):
            self._run_check(trainer)

    def on_validation_end(self, trainer: Trainer, pl_module: Module) -> None:
        if not self._check_on_train_epoch_end and not self._skips(trainer):
            self._run_check(trainer)

    @staticmethod
    def _skips(trainer: Trainer) -> bool:
        """As Lightning: only fit decides to stop (not validate() or the sanity check), so a
        training metric it monitors is never looked for in a validate() run."""
        return not trainer.training or trainer.sanity_checking

    def _improves(self, current: float, reference: float) -> bool:
        if self.mode == "min":
            return current < reference - self.min_delta
        return current > reference + self.min_delta

    def _beyond(self, current: float, threshold: float) -> bool:
        return current < threshold if self.mode == "min" else current > threshold

    def _run_check(self, trainer: Trainer) -> None:
        if trainer.fast_dev_run:
            return
        value = trainer.callback_metrics.get(self.monitor)
        if value is None:
            if self.strict:  # Lightning's error type and words, so code catching it still does
                available = "`, `".join(trainer.callback_metrics)
                raise RuntimeError(
                    f"Early stopping conditioned on metric `{self.monitor}` which is not "
                    "available. Pass in or modify your `EarlyStopping` callback to use any of the "
                    f"following: `{available}`"
                )
            return
        current = float(value)
        should_stop, reason = self._evaluate(current)
        # data-parallel ranks stop together: any rank that decides to stop stops them all
        should_stop = trainer.strategy.reduce_boolean_decision(should_stop, all=False)
        if should_stop:
            trainer.should_stop = True
            self.stopped_epoch = trainer.current_epoch
            self.stopping_reason_message = reason
            if reason:
                info(reason)
        elif reason and self.verbose:
            info(reason)

    def _evaluate(self, current: float) -> tuple[bool, str | None]:
        name = self.monitor
        if self.check_finite and not math.isfinite(current):
            return True, (
                f"Monitored metric {name} = {current} is not finite. Previous best value was "
                f"{self.best_score:.3f}. Signaling Trainer to stop."
            )
        if self.stopping_threshold is not None and self._beyond(current, self.stopping_threshold):
            return True, (
                f"Stopping threshold reached: {name} = {current} beyond {self.stopping_threshold}. "
                "Signaling Trainer to stop."
            )
        if self.divergence_threshold is not None and self._beyond(
            -current, -self.divergence_threshold
        ):
            return True, (
                f"Divergence threshold reached: {name} = {current} beyond "
                f"{self.divergence_threshold}. Signaling Trainer to stop."
            )
        if self._improves(current, self.best_score):
            first = not math.isfinite(self.best_score)
            message = (
                f"Metric {name} improved. New best score: {current:.3f}"
                if first
                else f"Metric {name} improved by {abs(self.best_score - current):.3f} >= "
                f"min_delta = {self.min_delta}. New best score: {current:.3f}"
            )
            self.best_score = current
            self.wait_count = 0
            return False, message
        self.wait_count += 1
        if self.wait_count >= self.patience:
            return True, (
                f"Monitored metric {name} did not improve in the last {self.wait_count} records. "
                f"Best score: {self.best_score:.3f}. Signaling Trainer to stop."
            )
        return False, None
