"""Optimizers and schedulers: parsing `configure_optimizers`, stepping through the precision, scheduler steps.

`configure_optimizers` may return any of Lightning's forms; they are parsed once into a list of
optimizers and a list of `LRSchedulerConfig` records, so the loop reads named fields
(`config.interval`) instead of guessing shapes. Module's own `optimizer_step`, `optimizer_zero_grad`
and `backward` only forward to the optimizer or the loss; when a module keeps them, the fit loop
forwards itself and skips their dispatch layers (none of them is a callback hook).
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from ltrain.errors import MisconfigurationException
from ltrain.module import Module
from ltrain.precision import Precision
from ltrain.trainer.hooks import call_hook, overrides

if TYPE_CHECKING:
    from ltrain.trainer.trainer import Trainer


@dataclass
class LRSchedulerConfig:
    """One scheduler from `configure_optimizers` and when it steps."""

    scheduler: Any
    interval: str = "epoch"
    frequency: int = 1
    monitor: str | None = None
    strict: bool = True
    name: str | None = None

    @property
    def reduce_on_plateau(self) -> bool:
        return isinstance(self.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau)


class LightningOptimizer:
    """Wraps a user's optimizer so `opt.step()` goes through the trainer (precision, hooks, step count).

    Everything else (`param_groups`, `zero_grad`, `state_dict`, ...) is the wrapped optimizer's.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, trainer: Trainer) -> None:
        self._optimizer = optimizer
        self._trainer = trainer

    @property
    def optimizer(self) -> torch.optim.Optimizer:
        return self._optimizer

    def step(self, closure: Any = None, **kwargs: Any) -> Any:
        return self._trainer.step_optimizer(self._optimizer, closure, **kwargs)

    def __getattr__(self, name: str) -> Any:
        # only reached for names the wrapper lacks; before __init__ ran (copy.deepcopy builds the
        # copy first) even `_optimizer` is missing, and forwarding it would recurse forever
        if name in ("_optimizer", "_trainer"):
            raise AttributeError(name)
        return getattr(self._optimizer, name)

    def __repr__(self) -> str:
        return f"LightningOptimizer({self._optimizer!r})"


def configure_optimizers(trainer: Trainer, model: Module) -> None:
    """Call the module's `configure_optimizers`, check the result against its optimization mode,
    and keep the optimizers, their wrappers and the schedulers on the trainer."""
    trainer.results.hook = "configure_optimizers"
    optimizers, configs = parse_optimizers(model.configure_optimizers(), model)
    trainer.results.hook = None
    if model.automatic_optimization and len(optimizers) > 1:
        raise MisconfigurationException(
            f"configure_optimizers returned {len(optimizers)} optimizers, but automatic "
            "optimization steps one. Set `self.automatic_optimization = False` in __init__ "
            "and step them yourself in training_step."
        )
    if not model.automatic_optimization:
        if trainer.accumulate_grad_batches != 1:
            raise MisconfigurationException(
                "accumulate_grad_batches is not supported with manual optimization; "
                "accumulate in training_step instead."
            )
        if trainer.gradient_clip_val:
            raise MisconfigurationException(
                "gradient_clip_val is not supported with manual optimization; call "
                "self.clip_gradients(opt, ...) in training_step instead."
            )
    trainer.optimizers = optimizers
    trainer._clipping_overridden = overrides(model, "configure_gradient_clipping", Module)
    trainer._default_optimizer_step = not overrides(model, "optimizer_step", Module)
    trainer._default_zero_grad = not overrides(model, "optimizer_zero_grad", Module)
    # with a precision that scales the loss, backward goes through the precision
    trainer._default_backward = type(trainer.precision_plugin).backward is Precision.backward and (
        not overrides(model, "backward", Module)
    )
    trainer.lightning_optimizers = [LightningOptimizer(opt, trainer) for opt in optimizers]
    trainer.lr_scheduler_configs = configs


def step_optimizer(
    trainer: Trainer,
    optimizer: torch.optim.Optimizer,
    closure: Callable[[], Any] | None,
    **kwargs: Any,
) -> Any:
    """Step through the precision (hooks and clipping after the closure); counts the step."""
    automatic = trainer.lightning_module.automatic_optimization
    output = trainer.precision_plugin.optimizer_step(
        optimizer,
        closure if closure is not None else _no_closure,
        functools.partial(_before_optimizer_step, trainer, optimizer, automatic),
        skip_without_loss=automatic,
        **kwargs,
    )
    trainer.global_step += 1
    return output


def _before_optimizer_step(
    trainer: Trainer, optimizer: torch.optim.Optimizer, automatic: bool
) -> None:
    call_hook(trainer, "on_before_optimizer_step", optimizer)
    # without a clip value the default hook clips nothing: skip the call unless overridden
    if automatic and (trainer.gradient_clip_val or trainer._clipping_overridden):
        call_hook(
            trainer,
            "configure_gradient_clipping",
            optimizer,
            trainer.gradient_clip_val,
            trainer.gradient_clip_algorithm,
        )


def _no_closure() -> None:
    return None


def step_schedulers(
    trainer: Trainer, interval: str, plateau: bool | None = None, batch_idx: int = 0
) -> None:
    """Step the schedulers of `interval` that are due (only plateau ones, or none, if given).

    As in Lightning, `frequency` of a step-interval scheduler counts the batches of the
    current epoch (`batch_idx + 1`), not the optimizer steps of the whole fit.
    """
    for config in trainer.lr_scheduler_configs:
        if config.interval != interval or plateau not in (None, config.reduce_on_plateau):
            continue
        count = batch_idx + 1 if interval == "step" else trainer.current_epoch + 1
        if count % config.frequency:
            continue
        metric = None
        if config.reduce_on_plateau:
            metric = trainer.callback_metrics.get(config.monitor or "")
            if metric is None:
                if not config.strict:
                    continue
                available = ", ".join(sorted(trainer.callback_metrics)) or "none"
                raise MisconfigurationException(
                    f"ReduceLROnPlateau conditioned on metric {config.monitor!r}, which was "
                    f"not logged. Available metrics: {available}."
                )
        call_hook(trainer, "lr_scheduler_step", config.scheduler, metric)


def parse_optimizers(
    returned: Any, model: Module
) -> tuple[list[torch.optim.Optimizer], list[LRSchedulerConfig]]:
    """Lightning's `configure_optimizers` forms: an optimizer, a list, ([opts], [scheds]), a dict.

    The schedulers are checked against `model`'s optimization mode: under manual optimization the
    module steps them itself, so a plateau scheduler needs no monitor and any object will do.
    """
    rules = _SchedulerRules(
        automatic=model.automatic_optimization,
        own_step=overrides(model, "lr_scheduler_step", Module),
    )
    if isinstance(returned, torch.optim.Optimizer):
        return [returned], []
    if isinstance(returned, Mapping):
        return _parse_optimizer_dict(returned, rules)
    if isinstance(returned, (list, tuple)):
        if (
            len(returned) == 2
            and isinstance(returned[0], (list, tuple))
            and isinstance(returned[1], (list, tuple))
        ):
            optimizers = list(returned[0])
            configs = [_scheduler_config(s, rules) for s in returned[1]]
            _check_optimizers(optimizers)
            return optimizers, configs
        if all(isinstance(item, Mapping) for item in returned):
            optimizers, configs = [], []
            for item in returned:
                opts, confs = _parse_optimizer_dict(item, rules)
                optimizers += opts
                configs += confs
            return optimizers, configs
        optimizers = list(returned)
        _check_optimizers(optimizers)
        return optimizers, []
    raise MisconfigurationException(
        "configure_optimizers must return an optimizer, a list of optimizers, "
        f"([optimizers], [schedulers]) or a dict with 'optimizer'; got {type(returned).__name__}"
    )


@dataclass(frozen=True)
class _SchedulerRules:
    """What the module's optimization mode asks of its schedulers."""

    automatic: bool  # the loop steps them (manual optimization: the module does)
    own_step: bool  # the module overrides lr_scheduler_step, so any object can be stepped


def _parse_optimizer_dict(
    returned: Mapping[str, Any], rules: _SchedulerRules
) -> tuple[list[Any], list[LRSchedulerConfig]]:
    unknown = set(returned) - {"optimizer", "lr_scheduler", "monitor"}
    if "optimizer" not in returned or unknown:
        raise MisconfigurationException(
            "configure_optimizers returned a dict; it needs 'optimizer' and may have "
            f"'lr_scheduler' and 'monitor' (got keys {sorted(returned)})"
        )
    optimizers = [returned["optimizer"]]
    _check_optimizers(optimizers)
    scheduler = returned.get("lr_scheduler")
    if scheduler is None:
        return optimizers, []
    return optimizers, [_scheduler_config(scheduler, rules, returned.get("monitor"))]


def _scheduler_config(
    scheduler: Any, rules: _SchedulerRules, monitor: str | None = None
) -> LRSchedulerConfig:
    if isinstance(scheduler, Mapping):
        allowed = {"scheduler", "interval", "frequency", "monitor", "strict", "name"}
        if "scheduler" not in scheduler or set(scheduler) - allowed:
            raise MisconfigurationException(
                f"lr_scheduler dict needs 'scheduler' and may have {sorted(allowed - {'scheduler'})}"
                f"; got keys {sorted(scheduler)}"
            )
        settings = {"monitor": monitor, **scheduler}
        if not rules.automatic:
            ignored = sorted(k for k in ("monitor", "strict") if k in scheduler)
            if ignored:
                warnings.warn(  # Lightning's warning: the keys only matter when the loop steps
                    f"The lr scheduler dict contains the key(s) {ignored}, but the keys will be "
                    "ignored. You need to call `lr_scheduler.step()` manually in manual "
                    "optimization.",
                    RuntimeWarning,
                    stacklevel=2,
                )
            settings = {k: v for k, v in settings.items() if k not in ("monitor", "strict")}
        config = LRSchedulerConfig(**settings)
    else:
        config = LRSchedulerConfig(
            scheduler=scheduler, monitor=monitor if rules.automatic else None
        )
    if config.interval not in ("epoch", "step"):
        raise MisconfigurationException(
            f"lr_scheduler interval={config.interval!r}: expected 'epoch' or 'step'"
        )
    if not isinstance(config.frequency, int) or config.frequency < 1:
        raise MisconfigurationException(
            f"lr_scheduler frequency={config.frequency!r}: expected an int >= 1"
        )
    name = type(config.scheduler).__name__
    if not hasattr(config.scheduler, "state_dict"):
        raise MisconfigurationException(
            f"lr_scheduler: {name} has no state_dict(), which checkpoints store; give it "
            "state_dict() and load_state_dict()"
        )
    if not rules.automatic:
        return config  # the module steps it: nothing more is asked of it
    if config.reduce_on_plateau and config.monitor is None:
        raise MisconfigurationException(
            "ReduceLROnPlateau needs a metric to watch: return {'optimizer': opt, 'lr_scheduler': "
            "{'scheduler': sched, 'monitor': 'valid_loss'}}."
        )
    if not hasattr(config.scheduler, "step") and not rules.own_step:
        raise MisconfigurationException(
            f"lr_scheduler: {name} has no step(); give it one, or override "
            "lr_scheduler_step(scheduler, metric) in the module to step it"
        )
    return config


def _check_optimizers(optimizers: list[Any]) -> None:
    for optimizer in optimizers:
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise MisconfigurationException(
                f"configure_optimizers returned a {type(optimizer).__name__} where an optimizer "
                "was expected"
            )
