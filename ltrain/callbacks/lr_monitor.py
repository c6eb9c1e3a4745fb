"""`LearningRateMonitor`: writes each optimizer's learning rate to the loggers, as Lightning names it.

Keys are `lr-<Optimizer>` (`lr-Adam`), `lr-Adam-1` for a second Adam, `/pg1`, `/pg2`, ... (or the
groups' `name`) when an optimizer has several parameter groups, or the scheduler's `name`;
optimizers with a scheduler come first, as in Lightning. Rows go straight to the loggers with the
step alone (no epoch, as in Lightning), at each epoch's start or on the batches a training row is
due, and the values go into `trainer.callback_metrics`. The last row written is part of the
callback's state, so a resumed run never writes it twice.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any

import torch

from ltrain.callbacks.base import Callback
from ltrain.errors import MisconfigurationException

if TYPE_CHECKING:
    from ltrain.module import Module
    from ltrain.trainer.trainer import Trainer


class LearningRateMonitor(Callback):
    def __init__(
        self,
        logging_interval: str | None = None,
        log_momentum: bool = False,
        log_weight_decay: bool = False,
    ) -> None:
        if logging_interval not in (None, "step", "epoch"):
            raise MisconfigurationException(
                f"LearningRateMonitor logging_interval={logging_interval!r}: expected 'step', "
                "'epoch' or None (each scheduler's own interval)"
            )
        self.logging_interval = logging_interval
        self.log_momentum = log_momentum
        self.log_weight_decay = log_weight_decay
        # every value written so far per key, and the latest momentum / weight decay (Lightning's)
        self.lrs: dict[str, list[float]] = {}
        self.last_momentum_values: dict[str, float | None] = {}
        self.last_weight_decay_values: dict[str, float | None] = {}
        self._last_logged: list[Any] = []

    def state_dict(self) -> dict[str, Any]:
        return {"last_logged": list(self._last_logged)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._last_logged = list(state_dict["last_logged"])

    def on_train_start(self, trainer: Trainer, pl_module: Module) -> None:
        if not trainer.loggers:
            raise MisconfigurationException(
                "LearningRateMonitor needs a logger to write to; the Trainer has logger=False."
            )
        watched = [
            c.scheduler.optimizer for c in trainer.lr_scheduler_configs
        ] or trainer.optimizers

        def lacking(key: str) -> bool:
            return any(key not in optimizer.defaults for optimizer in watched)

        if self.log_momentum and lacking("momentum") and lacking("betas"):
            warnings.warn(
                "You have set log_momentum=True, but some optimizers do not have momentum. "
                "This will log a value 0 for the momentum.",
                RuntimeWarning,
                stacklevel=2,
            )
        names = [name for _, _, group_names in self._named(trainer) for name in group_names]
        self.lrs = {name: [] for name in names}
        self.last_momentum_values = {f"{name}-momentum": None for name in names}
        self.last_weight_decay_values = {f"{name}-weight_decay": None for name in names}

    def on_train_batch_start(
        self, trainer: Trainer, pl_module: Module, batch: Any, batch_idx: int
    ) -> None:
        # the trainer's own rule for when a training row is due (log_every_n_steps, stopping)
        from ltrain.trainer.log_rows import logger_step, row_due

        step = logger_step(trainer)
        if self.logging_interval != "epoch" and row_due(trainer, step + 1):
            self._log(trainer, "step" if self.logging_interval is None else "any", step)

    def on_train_epoch_start(self, trainer: Trainer, pl_module: Module) -> None:
        from ltrain.trainer.log_rows import logger_step

        if self.logging_interval != "step":
            interval = "epoch" if self.logging_interval is None else "any"
            self._log(trainer, interval, logger_step(trainer))

    def _log(self, trainer: Trainer, interval: str, step: int) -> None:
        marker = [interval, trainer.current_epoch, step]
        if marker == self._last_logged:
            return
        stats = self.learning_rates(trainer, interval)
        if not stats:
            return
        self._last_logged = marker
        device = trainer.strategy.root_device
        trainer.callback_metrics.update(
            {key: torch.tensor(value, device=device) for key, value in stats.items()}
        )
        if trainer.is_global_zero:
            for logger in trainer.loggers:
                logger.log_metrics(dict(stats), step)

    def learning_rates(self, trainer: Trainer, interval: str) -> dict[str, float]:
        """The learning rates (and momenta, weight decays) due at `interval`, keyed as Lightning
        keys them: a scheduler's when its interval is due ('any': every scheduler's), and those
        of optimizers without a scheduler always."""
        stats: dict[str, float] = {}
        for optimizer, config, names in self._named(trainer):
            if config is not None and interval not in (config.interval, "any"):
                continue
            use_betas = "betas" in optimizer.defaults
            for group, name in zip(optimizer.param_groups, names, strict=True):
                stats[name] = group["lr"]
                self.lrs.setdefault(name, []).append(group["lr"])
                if self.log_momentum:
                    momentum = group["betas"][0] if use_betas else group.get("momentum", 0)
                    stats[f"{name}-momentum"] = momentum
                    self.last_momentum_values[f"{name}-momentum"] = momentum
                if self.log_weight_decay:
                    stats[f"{name}-weight_decay"] = group["weight_decay"]
                    self.last_weight_decay_values[f"{name}-weight_decay"] = group["weight_decay"]
        return stats

    def _named(self, trainer: Trainer) -> list[tuple[torch.optim.Optimizer, Any, list[str]]]:
        """(optimizer, its scheduler config or None, one key per parameter group), optimizers
        with a scheduler first, in Lightning's naming."""
        named: list[tuple[torch.optim.Optimizer, Any, list[str]]] = []
        seen: list[torch.optim.Optimizer] = []
        counts: dict[type, int] = {}  # optimizers of each class named by class so far
        for config in trainer.lr_scheduler_configs:
            optimizer = config.scheduler.optimizer
            by_class = config.name is None
            base = f"lr-{type(optimizer).__name__}" if config.name is None else config.name
            named.append((optimizer, config, self._keys(optimizer, base, seen, counts, by_class)))
        for optimizer in trainer.optimizers:
            if any(optimizer is other for other in seen):
                continue
            base = f"lr-{type(optimizer).__name__}"
            named.append((optimizer, None, self._keys(optimizer, base, seen, counts, True)))
        return named

    def _keys(
        self,
        optimizer: torch.optim.Optimizer,
        base: str,
        seen: list[torch.optim.Optimizer],
        counts: dict[type, int],
        by_class: bool,
    ) -> list[str]:
        seen.append(optimizer)
        kind = type(optimizer)
        if by_class:
            counts[kind] = counts.get(kind, 0) + 1
        groups = optimizer.param_groups
        group_names = [g.get("name", f"pg{i}") for i, g in enumerate(groups, start=1)]
        repeated = {n for n in group_names if group_names.count(n) > 1}
        if repeated:
            raise MisconfigurationException(
                "A single `Optimizer` cannot have multiple parameter groups with identical "
                f"`name` values. {base} has duplicated parameter group names {repeated}"
            )
        # Lightning numbers a class's later optimizers (a named scheduler's one too, once its
        # class was counted)
        if counts.get(kind, 0) > 1:
            base = f"{base}-{counts[kind] - 1}"
        if len(groups) > 1:
            return [f"{base}/{name}" for name in group_names]
        own = groups[0].get("name")
        return [f"{base}/{own}" if own else base]
