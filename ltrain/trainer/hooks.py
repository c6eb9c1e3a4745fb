"""The one hook dispatcher, and which callbacks a run has and in what order they run.

A hook call is a plan lookup: who implements the hook in this run (callbacks before the module,
the module, callbacks that decide from metrics after it) is worked out once per run and cached,
so a hook that nobody implements costs one dict lookup and one identity test. Several run every
batch. Whether an object implements a hook is decided by one rule, `overrides`.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from datetime import timedelta
from typing import TYPE_CHECKING, Any, NamedTuple

from ltrain.callbacks.base import Callback
from ltrain.callbacks.checkpoint import Checkpoint
from ltrain.callbacks.model_checkpoint import ModelCheckpoint
from ltrain.callbacks.model_summary import ModelSummary
from ltrain.callbacks.progress import ProgressBar, TQDMProgressBar
from ltrain.callbacks.timer import Timer
from ltrain.console import info
from ltrain.errors import MisconfigurationException
from ltrain.module import NO_OP_HOOKS, Module

if TYPE_CHECKING:
    from ltrain.trainer.trainer import Trainer


class HookPlan(NamedTuple):
    """Who implements one hook in this run (a tuple, so the dispatcher unpacks it cheaply)."""

    before: list[Callback]  # callbacks that run before the module
    method: Any  # the module's bound method, or None
    after: list[Callback]  # on_train_epoch_end's callbacks that decide from metrics


NOBODY = HookPlan(
    [], None, []
)  # the plan of a hook that neither the module nor a callback implements


def call_hook(trainer: Trainer, name: str, *args: Any) -> Any:
    """Call hook `name` on the callbacks and the module, in Lightning's order.

    Callbacks that override the hook run first, then the module; in on_train_epoch_end the
    callbacks that decide from metrics (`runs_after_module`) run after the module, so they see
    what it logged there (Lightning's one exception). The hook name is handed to the results aggregator, which
    decides what `self.log` may do inside it.
    """
    plan = trainer._hook_plans.get(name)
    if plan is None:
        plan = trainer._hook_plans[name] = plan_hook(trainer, name)
    if plan is NOBODY:
        return None
    before, method, after = plan
    module = trainer.lightning_module
    results = trainer.results
    outer_hook = results.hook
    results.hook = name
    for callback in before:
        getattr(callback, name)(trainer, module, *args)
    output = method(*args) if method is not None else None
    for callback in after:
        getattr(callback, name)(trainer, module, *args)
    results.hook = outer_hook
    return output


def plan_hook(trainer: Trainer, name: str) -> HookPlan:
    """Who implements hook `name` in this run.

    `NOBODY` when no one does, so that the dispatcher's common case is one identity test.
    """
    before, after = _split_callbacks(trainer.callbacks, name)
    module = trainer.lightning_module
    method = getattr(module, name, None)
    if name in NO_OP_HOOKS and not overrides(module, name, Module):
        method = None
    if method is None and not before and not after:
        return NOBODY
    plan = HookPlan(before, method, after)
    return _profiled(trainer, name, plan) if trainer.profiler.timing else plan


def _profiled(trainer: Trainer, name: str, plan: HookPlan) -> HookPlan:
    """The same calls, each timed by the trainer's profiler under Lightning's action names."""
    profiler, module = trainer.profiler, trainer.lightning_module

    def timed(callbacks: list[Callback], *args: Any) -> None:
        for callback in callbacks:
            with profiler.profile(f"[Callback]{type(callback).__name__}.{name}"):
                getattr(callback, name)(trainer, module, *args)

    def run(*args: Any) -> Any:
        timed(plan.before, *args)
        output = None
        if plan.method is not None:
            with profiler.profile(f"[LightningModule]{type(module).__name__}.{name}"):
                output = plan.method(*args)
        timed(plan.after, *args)
        return output

    return HookPlan([], run, [])


def step_args(trainer: Trainer, hook: str, batch: Any, batch_idx: int) -> tuple[Any, ...]:
    """Mark `hook` (a `*_step`, called directly rather than dispatched) as the one logging, and
    return the step's arguments: `batch_idx` only when the step takes it (decided once a run)."""
    trainer.results.hook = hook
    takes = trainer._takes_batch_idx.get(hook)
    if takes is None:
        takes = trainer._takes_batch_idx[hook] = takes_batch_idx(
            getattr(trainer.lightning_module, hook)
        )
    return (batch, batch_idx) if takes else (batch,)


def takes_batch_idx(step: Callable[..., Any]) -> bool:
    """Lightning's rule for a `*_step`: `batch_idx` is passed when the step names it, takes
    `*args`, or has at least two parameters after its first (so `step(self, batch)` gets none)."""
    step = getattr(step, "__wrapped__", step)  # a decorated step: its own signature
    spec = inspect.getfullargspec(step)
    after_first = spec.args[1:]
    return "batch_idx" in after_first or spec.varargs is not None or len(after_first) >= 2


def overrides(obj: Any, name: str, base: type) -> bool:
    """`obj` implements `name` itself: in its class, or as an attribute set on the instance.

    The one rule for every "is this hook, step or loader method overridden?" question.
    """
    return name in vars(obj) or getattr(type(obj), name, None) is not getattr(base, name, None)


def _split_callbacks(callbacks: list[Callback], name: str) -> tuple[list[Callback], list[Callback]]:
    if getattr(Callback, name, None) is None:
        return [], []
    overriding = [c for c in callbacks if overrides(c, name, Callback)]
    if name != "on_train_epoch_end":  # the one hook where Lightning runs them after the module
        return overriding, []
    return (
        [c for c in overriding if not c.runs_after_module],
        [c for c in overriding if c.runs_after_module],
    )


def merge_model_callbacks(callbacks: list[Callback], model: Module) -> list[Callback]:
    """Lightning's rule: a callback from `configure_callbacks` replaces the trainer's of its type.

    Called on every attach, so callbacks from an earlier call are replaced rather than doubled.
    """
    returned = model.configure_callbacks()
    if not returned:
        return callbacks
    from_model = list(returned) if isinstance(returned, (list, tuple)) else [returned]
    replaced = {
        type(c)
        for c in callbacks
        if type(c) is not Callback and any(isinstance(m, type(c)) for m in from_model)
    }
    if replaced:
        info(
            "The following callbacks returned in `LightningModule.configure_callbacks` will "
            f"override existing callbacks passed to Trainer: "
            f"{', '.join(sorted(t.__name__ for t in replaced))}"
        )
    return [c for c in callbacks if type(c) not in replaced] + from_model


def order_callbacks(callbacks: list[Callback]) -> list[Callback]:
    """Checkpointing last, as in Lightning, so it saves what other callbacks already updated."""
    return [c for c in callbacks if not isinstance(c, Checkpoint)] + [
        c for c in callbacks if isinstance(c, Checkpoint)
    ]


def make_callbacks(
    callbacks: Callback | list[Callback] | None,
    *,
    checkpointing: bool,
    progress_bar: bool,
    model_summary: bool,
    max_time: timedelta | None = None,
) -> list[Callback]:
    """The trainer's callbacks: the given ones plus Lightning's defaults that are switched on."""
    given = [callbacks] if isinstance(callbacks, Callback) else list(callbacks or [])
    for callback in given:
        if not isinstance(callback, Callback):
            raise MisconfigurationException(
                f"callbacks: {type(callback).__name__} is not an ltrain Callback"
            )
    bars = [c for c in given if isinstance(c, ProgressBar)]
    if progress_bar and not bars:
        given.append(TQDMProgressBar())
    if not progress_bar and bars:
        raise MisconfigurationException(
            f"enable_progress_bar=False but a {type(bars[0]).__name__} is in callbacks; "
            "remove one of them."
        )
    if model_summary and not any(isinstance(c, ModelSummary) for c in given):
        given.append(ModelSummary())
    if max_time is not None:
        if any(isinstance(c, Timer) for c in given):
            info("Ignoring `Trainer(max_time=...)`, callbacks list already contains a Timer.")
        else:
            given.append(Timer(duration=max_time, interval="step"))
    savers = [c for c in given if isinstance(c, Checkpoint)]
    if checkpointing and not savers:
        given.append(ModelCheckpoint())
    if not checkpointing and savers:
        raise MisconfigurationException(
            f"enable_checkpointing=False but a {type(savers[0]).__name__} is in callbacks; "
            "remove one of them."
        )
    return order_callbacks(given)
