"""`LearningRateMonitor`: writes each optimizer's learning rate to the loggers, as Lightning names it.

Keys are `lr-<Optimizer>` (`lr-Adam`), `lr-Adam-1` for a second Adam, `/pg1`, `/pg2`, ... when an
optimizer has several parameter groups, or the scheduler's `name`. Rows go straight to the
loggers (as in Lightning), at the start of each epoch or every `log_every_n_steps` steps. The
last row written is part of its state, so a resumed run never writes it twice.
"""

from __future__ import annotations

from typing import Any

from ltrain.callbacks.base import Callback
from ltrain.errors import MisconfigurationException


class LearningRateMonitor(Callback):
    def __init__(self, logging_interval: str | None = None, log_momentum: bool = False) -> None:
        if logging_interval not in (None, "step", "epoch"):
            raise MisconfigurationException(
                f"LearningRateMonitor logging_interval={logging_interval!r}: expected 'step', "
                "'epoch' or None (each scheduler's own interval)"
            )
        self.logging_interval = logging_interval
        self.log_momentum = log_momentum
        self._last_logged: list[Any] = []

    def state_dict(self) -> dict[str, Any]:
        return {"last_logged": list(self._last_logged)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._last_logged = list(state_dict["last_logged"])

    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        if not trainer.loggers:
            raise MisconfigurationException(
                "LearningRateMonitor needs a logger to write to; the Trainer has logger=False."
            )

    def on_train_batch_start(
        self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int
    ) -> None:
        every = trainer.log_every_n_steps
        if self.logging_interval != "epoch" and every and (trainer.global_step + 1) % every == 0:
            self._log(trainer, "step", trainer.global_step)

    def on_train_epoch_start(self, trainer: Any, pl_module: Any) -> None:
        if self.logging_interval != "step":
            self._log(trainer, "epoch", trainer.global_step)

    def _log(self, trainer: Any, interval: str, step: int) -> None:
        marker = [interval, trainer.current_epoch, step]
        if marker == self._last_logged:
            return
        stats = self.learning_rates(trainer, interval)
        if not stats:
            return
        self._last_logged = marker
        row = {**stats, "epoch": trainer.current_epoch}
        if trainer.is_global_zero:
            for logger in trainer.loggers:
                logger.log_metrics(row, step)

    def learning_rates(self, trainer: Any, interval: str) -> dict[str, float]:
        """The learning rates (and momenta) due at `interval`, keyed as Lightning keys them."""
        schedulers = {id(c.scheduler.optimizer): c for c in trainer.lr_scheduler_configs}
        seen: dict[str, int] = {}
        stats: dict[str, float] = {}
        for optimizer in trainer.optimizers:
            config = schedulers.get(id(optimizer))
            due = self.logging_interval or (config.interval if config is not None else "epoch")
            base = type(optimizer).__name__
            count = seen.get(base, 0)
            seen[base] = count + 1
            if due != interval:
                continue
            name = (config.name if config is not None else None) or (
                f"lr-{base}" if count == 0 else f"lr-{base}-{count}"
            )
            groups = optimizer.param_groups
            for index, group in enumerate(groups):
                key = name if len(groups) == 1 else f"{name}/{group.get('name', f'pg{index + 1}')}"
                stats[key] = float(group["lr"])
                if self.log_momentum:
                    momentum = group.get("momentum", group.get("betas", (None,))[0])
                    if momentum is not None:
                        stats[f"{key}-momentum"] = float(momentum)
        return stats
