"""Step/epoch aggregation of everything `self.log` receives: the one place logged numbers flow through.

Values stay tensors on their device: a batch adds `value * batch_size` and the batch size into
running sums, and an epoch value is one division when the epoch ends. Nothing here calls
`.item()`; tensors become floats only in `to_floats`, once per CSV row or progress-bar refresh.

The hook a value is logged from decides its defaults and what is allowed. The trainer's hook
dispatcher sets `Results.hook` before it calls user code, so the hook is always known explicitly.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from typing import Any

import torch

from ltrain.batch import infer_batch_size
from ltrain.errors import MisconfigurationException

# hook name -> (allowed on_step values, allowed on_epoch values, default on_step, default on_epoch)
_STEP_HOOK = ((False, True), (False, True), True, False)
_EVAL_STEP_HOOK = ((False, True), (False, True), False, True)
_EPOCH_HOOK = ((False,), (True,), False, True)
_LOGGING_RULES: dict[str, tuple[tuple[bool, ...], tuple[bool, ...], bool, bool]] = {
    **dict.fromkeys(
        (
            "training_step",
            "on_train_batch_start",
            "on_train_batch_end",
            "on_before_backward",
            "backward",
            "on_after_backward",
            "on_before_optimizer_step",
            "on_before_zero_grad",
            "optimizer_step",
            "optimizer_zero_grad",
            "configure_gradient_clipping",
        ),
        _STEP_HOOK,
    ),
    **dict.fromkeys(
        (
            "validation_step",
            "test_step",
            "on_validation_batch_start",
            "on_validation_batch_end",
            "on_test_batch_start",
            "on_test_batch_end",
        ),
        _EVAL_STEP_HOOK,
    ),
    **dict.fromkeys(
        (
            "on_train_start",
            "on_train_epoch_start",
            "on_train_epoch_end",
            "on_validation_start",
            "on_validation_epoch_start",
            "on_validation_epoch_end",
            "on_test_start",
            "on_test_epoch_start",
            "on_test_epoch_end",
        ),
        _EPOCH_HOOK,
    ),
}

# what `reduce_fx` may be, as in Lightning: a name in any case, or torch's (or Python's) function
_REDUCTIONS: dict[Any, str] = {
    "mean": "mean",
    "avg": "mean",
    "sum": "sum",
    "max": "max",
    "min": "min",
    torch.mean: "mean",
    torch.sum: "sum",
    torch.max: "max",
    torch.min: "min",
    sum: "sum",
    max: "max",
    min: "min",
}


def _reduction(name: str, reduce_fx: Any) -> str:
    """'mean', 'sum', 'max' or 'min' for a `reduce_fx` Lightning accepts; anything else is refused."""
    key = reduce_fx.lower() if isinstance(reduce_fx, str) else reduce_fx
    try:
        return _REDUCTIONS[key]
    except (KeyError, TypeError):
        raise MisconfigurationException(
            f"self.log({name!r}, reduce_fx={reduce_fx!r}): only reduce_fx in {{min, max, mean, "
            "sum}} is supported (a name or torch's function); for a custom reduction, log a "
            "torchmetrics.Metric instead."
        ) from None


def _is_metric(value: Any) -> bool:
    """A torchmetrics `Metric`, recognised without importing torchmetrics."""
    return hasattr(value, "compute") and hasattr(value, "reset") and hasattr(value, "update")


class _Entry:
    """One logged name within one loop run: its options and running aggregate."""

    __slots__ = (
        "name",
        "hook",
        "options",
        "on_step",
        "on_epoch",
        "reduce",
        "prog_bar",
        "logger",
        "sync_dist",
        "step_to_callbacks",
        "total",
        "weight",
        "metric",
        "epoch_value",
        "forked",
        "step_key",
        "epoch_key",
        "metric_attribute",
        "suffix",
        "dataloader_idx",
    )

    def __init__(self, name: str, suffix: str, hook: str, options: tuple, on_step: bool,
                 on_epoch: bool, reduce: str, prog_bar: bool, logger: bool,
                 sync_dist: bool) -> None:  # fmt: skip
        self.name = name + suffix
        self.suffix = suffix
        self.hook = hook
        self.options = options
        self.on_step = on_step
        self.on_epoch = on_epoch
        self.reduce = reduce
        self.prog_bar = prog_bar
        self.logger = logger
        self.sync_dist = sync_dist
        # Lightning keeps step values of validation/test out of callback_metrics: only training
        # steps feed callbacks per step, evaluation feeds them its epoch values
        self.step_to_callbacks = _LOGGING_RULES[hook] is _STEP_HOOK
        self.total: torch.Tensor | None = None
        self.weight = 0
        self.metric: Any = None
        self.epoch_value: torch.Tensor | None = None
        # the names rows use, fixed per entry so not rebuilt on every `self.log`: logged on step
        # and epoch, a name forks into `_step` and `_epoch` keys, ahead of a loader's suffix
        # (`loss_step/dataloader_idx_1`) as Lightning names them
        self.forked = forked = on_step and on_epoch
        self.step_key = f"{name}_step{suffix}" if forked else self.name
        self.epoch_key = f"{name}_epoch{suffix}" if forked else self.name
        self.metric_attribute: str | None = None  # where a checkpoint finds a torchmetrics value
        self.dataloader_idx: int | None = None

    def resolved(self) -> tuple:
        """The options after defaults are applied: what makes two `self.log` calls the same."""
        return (
            self.on_step,
            self.on_epoch,
            self.reduce,
            self.prog_bar,
            self.logger,
            self.sync_dist,
        )


class Results:
    """Aggregates the values logged during one loop run (a training epoch, a validation run, ...).

    `step_values` holds the latest value of each name logged on step (logger keys, suffixed): as
    in Lightning, a name logged in an earlier batch of this run (of this loader) stays in the
    rows until the run ends. `callback_metrics` / `progress_bar_metrics` / `logged_metrics` are
    the trainer's dicts, updated in place as values are logged, so a hook reads this batch's
    values as Lightning's do (which merge them when read); they hold tensors, read only when
    a row or the progress bar needs floats.
    `reduce_across_processes(tensor, op)` reduces a tensor over processes for `sync_dist` with op
    'mean', 'sum', 'max' or 'min' (None with one process).
    """

    def __init__(
        self,
        callback_metrics: dict[str, torch.Tensor],
        progress_bar_metrics: dict[str, torch.Tensor],
        logged_metrics: dict[str, torch.Tensor],
        reduce_across_processes: Callable[[torch.Tensor, str], torch.Tensor] | None = None,
    ) -> None:
        self.callback_metrics = callback_metrics
        self.progress_bar_metrics = progress_bar_metrics
        self.logged_metrics = logged_metrics
        self.reduce_across_processes = reduce_across_processes
        self.hook: str | None = None
        self.dataloader_idx: int | None = None
        self.batch: Any = None
        self._batch_size: int | None = None
        # keyed by (hook, name) as in Lightning: one name may be logged from several hooks (the
        # latest value wins in the trainer's dicts and rows)
        self.entries: dict[tuple[str | None, str], _Entry] = {}
        self.step_values: dict[str, torch.Tensor] = {}

    # ------------------------------------------------------------------ called by the trainer
    def start_batch(self, batch: Any, dataloader_idx: int | None = None) -> None:
        self.batch = batch
        self._batch_size = None
        if dataloader_idx != self.dataloader_idx:
            self.dataloader_idx = dataloader_idx
            self.step_values = {}  # the next loader's rows hold its own values only

    # ------------------------------------------------------------------ called by Module.log
    def log(
        self,
        name: str,
        value: Any,
        prog_bar: bool,
        logger: bool,
        on_step: bool | None,
        on_epoch: bool | None,
        reduce_fx: Any,
        sync_dist: bool,
        add_dataloader_idx: bool,
        batch_size: int | None,
        rank_zero_only: bool = False,
        metric_attribute: str | None = None,
    ) -> None:
        """Record one `self.log` call; runs for every logged value of every step, so it is lean.

        `rank_zero_only`: only rank 0 calls `self.log` for this name, so its value is never
        reduced across processes (a collective would wait for the others), as in Lightning.
        `metric_attribute`: the module's attribute path of a logged torchmetrics object.
        """
        suffix = ""
        if self.dataloader_idx is not None and add_dataloader_idx:
            suffix = f"/dataloader_idx_{self.dataloader_idx}"
        options = (
            on_step, on_epoch, reduce_fx, prog_bar, logger, sync_dist, rank_zero_only,
            metric_attribute, self.dataloader_idx,
        )  # fmt: skip
        entry = self.entries.get((self.hook, name + suffix))
        if entry is None or entry.options != options:
            entry = self._new_entry(name, suffix, self.hook, options, entry)

        # a tensor is the common case: tested first, it skips the metric's attribute probing
        if isinstance(value, torch.Tensor) or not _is_metric(value):
            step_value = _as_scalar_tensor(name, value)
            if entry.on_epoch:
                self._accumulate(entry, step_value, batch_size)
            if not entry.on_step:
                return
        else:
            entry.metric = value
            forward_value = getattr(value, "_forward_cache", None) if entry.on_step else None
            if forward_value is None:
                return
            step_value = forward_value.detach()
        if entry.sync_dist and self.reduce_across_processes is not None:
            step_value = self.reduce_across_processes(step_value, entry.reduce)
        key = entry.step_key
        if entry.step_to_callbacks:
            self.callback_metrics[entry.name] = step_value
            if entry.forked:
                self.callback_metrics[key] = step_value
        if entry.logger:
            self.step_values[key] = step_value
            self.logged_metrics[key] = step_value
        if entry.prog_bar:
            self.progress_bar_metrics[key] = step_value

    def _new_entry(
        self, name: str, suffix: str, hook: str | None, options: tuple, previous: _Entry | None
    ) -> _Entry:
        """An entry for `name` in `hook`; one logged there before must mean the same (from the
        same loader too: a name kept without its loader's suffix is refused from another, as in
        Lightning)."""
        (
            on_step,
            on_epoch,
            reduce_fx,
            prog_bar,
            logger,
            sync_dist,
            rank_zero_only,
            attribute,
            idx,
        ) = options
        sync_dist = sync_dist and not rank_zero_only
        if hook is None:
            raise MisconfigurationException(
                f"self.log({name!r}) was called outside a hook the trainer runs; log inside a step or hook."
            )
        rules = _LOGGING_RULES.get(hook)
        if rules is None:
            raise MisconfigurationException(f"You can't `self.log()` inside `{hook}`.")
        allowed_step, allowed_epoch, default_step, default_epoch = rules
        on_step = default_step if on_step is None else bool(on_step)
        on_epoch = default_epoch if on_epoch is None else bool(on_epoch)
        if on_step not in allowed_step:
            raise MisconfigurationException(
                f"self.log({name!r}, on_step={on_step}) is not allowed in `{hook}`; "
                f"only on_step={allowed_step[0]} is."
            )
        if on_epoch not in allowed_epoch:
            raise MisconfigurationException(
                f"self.log({name!r}, on_epoch={on_epoch}) is not allowed in `{hook}`; "
                f"only on_epoch={allowed_epoch[0]} is."
            )
        if not on_step and not on_epoch:
            raise MisconfigurationException(
                f"self.log({name!r}) with on_step=False and on_epoch=False logs nothing; set one of them."
            )
        reduce = _reduction(name, reduce_fx)
        entry = _Entry(
            name, suffix, hook, options, on_step, on_epoch, reduce, prog_bar, logger, sync_dist
        )
        entry.metric_attribute = attribute
        entry.dataloader_idx = idx
        if previous is not None and (
            previous.resolved() != entry.resolved() or previous.dataloader_idx != idx
        ):
            raise MisconfigurationException(
                f"You called `self.log({name}, ...)` twice in `{hook}` with different arguments. "
                "This is not allowed"
            )
        if previous is not None:  # same meaning, spelled differently (e.g. a default written out)
            entry.total, entry.weight, entry.metric = (
                previous.total,
                previous.weight,
                previous.metric,
            )
        self.entries[(hook, entry.name)] = entry
        return entry

    def _accumulate(self, entry: _Entry, value: torch.Tensor, batch_size: int | None) -> None:
        if entry.reduce == "mean":
            size = batch_size if batch_size is not None else self.batch_size()
            if entry.total is None:
                entry.total = value * size  # a new tensor: the in-place adds below stay ours
            else:
                # Lightning's arithmetic to the last bit: the product rounded, then the sum (a
                # fused `add_(value, alpha=size)` rounds once and differs for odd sizes)
                entry.total.add_(value * size)
            entry.weight += size
        elif entry.total is None:
            entry.total = value
            entry.weight = 1
        elif entry.reduce == "sum":
            entry.total = entry.total + value
        elif entry.reduce == "max":
            entry.total = torch.maximum(entry.total, value)
        else:
            entry.total = torch.minimum(entry.total, value)

    def batch_size(self) -> int:
        """The current batch's size: the first dimension of the first tensor found in it."""
        if self._batch_size is None:
            self._batch_size = infer_batch_size(self.batch)
        return self._batch_size

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self, module: torch.nn.Module) -> dict[str, Any]:
        """The running aggregates of this loop run, so a resumed epoch ends with the same values.

        A torchmetrics object is found again by its attribute path in `module`; its states are
        saved with it (they are not part of the module's state_dict).
        """
        paths = {id(m): name for name, m in module.named_modules()}
        entries = []
        for entry in self.entries.values():
            item: dict[str, Any] = {
                "name": entry.name.removesuffix(entry.suffix),
                "suffix": entry.suffix,
                "dataloader_idx": entry.dataloader_idx,
                "hook": entry.hook,
                "resolved": list(entry.resolved()),
                "total": entry.total,
                "weight": entry.weight,
                "epoch_value": entry.epoch_value,
            }
            path = entry.metric_attribute or paths.get(id(entry.metric))
            if entry.metric is not None and path is not None:
                item["metric"] = path
                item["metric_state"] = dict(entry.metric.metric_state)
                item["metric_updates"] = int(getattr(entry.metric, "_update_count", 0))
            entries.append(item)
        return {"entries": entries, "step_values": dict(self.step_values)}

    def load_state_dict(self, state: dict[str, Any], module: torch.nn.Module) -> None:
        for item in state["entries"]:
            on_step, on_epoch, reduce, prog_bar, logger, sync_dist = item["resolved"]
            # empty options: the next `self.log` call re-checks its options against these
            entry = _Entry(
                item["name"],
                item.get("suffix", ""),  # absent in checkpoints of older versions
                item["hook"],
                (),
                on_step,
                on_epoch,
                reduce,
                prog_bar,
                logger,
                sync_dist,
            )
            entry.total, entry.weight = item["total"], item["weight"]
            entry.epoch_value = item["epoch_value"]
            entry.dataloader_idx = item.get("dataloader_idx")
            if "metric" in item:
                metric = module.get_submodule(item["metric"])
                for key, value in item["metric_state"].items():
                    setattr(metric, key, value)
                metric._update_count = item["metric_updates"]
                entry.metric = metric
            self.entries[(entry.hook, entry.name)] = entry
        self.step_values = dict(state["step_values"])

    # ------------------------------------------------------------------ epoch end
    def epoch_values(self) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """The epoch value of every on_epoch entry (each computed once, then reused).

        Returns (logger values keyed as the logger writes them, callback values with bare and
        suffixed names) and updates the trainer's callback, logged and progress-bar dicts.
        """
        logged: dict[str, torch.Tensor] = {}
        callback: dict[str, torch.Tensor] = {}
        for entry in self.entries.values():
            if not entry.on_epoch:
                continue
            if entry.epoch_value is None:  # computed once a run, reused by later calls
                entry.epoch_value = self._epoch_value(entry)
            value = entry.epoch_value
            if value is None:
                continue
            callback[entry.name] = value
            key = entry.epoch_key
            callback[key] = value
            if entry.logger:
                logged[key] = value
            if entry.prog_bar:
                self.progress_bar_metrics[key] = value
        self.callback_metrics.update(callback)
        self.logged_metrics.update(logged)
        return logged, callback

    def loader_of(self) -> dict[str, int | None]:
        """The loader each logged epoch key came from (None: a hook outside the loaders' batches),
        which decides the loaders whose `validate()`/`test()` results hold it, as in Lightning:
        a name logged without its loader's suffix still belongs to that loader alone."""
        return {e.epoch_key: e.dataloader_idx for e in self.entries.values() if e.on_epoch}

    def reset_metrics(self) -> None:
        """Reset the torchmetrics objects logged in this run, where Lightning does: when the run's
        last row is written (after on_train_epoch_end, or after on_validation_end), so a hook until
        then can still `compute()` them."""
        logged = {id(e.metric): e.metric for e in self.entries.values() if e.metric is not None}
        for metric in logged.values():
            metric.reset()

    def _epoch_value(self, entry: _Entry) -> torch.Tensor | None:
        if entry.metric is not None:
            value = entry.metric.compute()
            if isinstance(value, torch.Tensor):
                return value.detach()
            return torch.tensor(float(value))
        if entry.total is None:
            return None
        total, weight = entry.total, entry.weight
        reduce = self.reduce_across_processes
        if entry.sync_dist and reduce is not None:
            if entry.reduce == "mean":
                weight_tensor = torch.tensor(float(weight), device=total.device)
                return reduce(total, "sum") / reduce(weight_tensor, "sum")
            return reduce(total, entry.reduce)
        return total / weight if entry.reduce == "mean" else total


_FULL_PRECISION = (torch.float32, torch.float64)


def _as_scalar_tensor(name: str, value: Any) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        if value.dim():  # a 0-d tensor is the common case: one call decides it is a scalar
            if value.numel() != 1:
                raise ValueError(
                    f"self.log({name!r}, value): value must be a scalar, got a tensor of shape "
                    f"{tuple(value.shape)}"
                )
            value = value.reshape(())
        if value.requires_grad:  # the sums must not hold the step's graph
            value = value.detach()
        if value.dtype not in _FULL_PRECISION:
            value = value.to(torch.float32)  # sums of half-precision values lose digits
        return value
    if isinstance(value, (int, float)):
        return torch.tensor(float(value))
    if hasattr(value, "item") and getattr(value, "size", 2) == 1:  # NumPy scalars
        return torch.tensor(float(value.item()))
    raise ValueError(
        f"self.log({name!r}, value): value must be a number, a scalar tensor or a torchmetrics "
        f"Metric, got {type(value).__name__}"
    )


def to_floats(values: Mapping[str, torch.Tensor]) -> dict[str, float]:
    """Turn logged tensors into Python floats with one host transfer per device.

    This is the only place logged values cross to the host; it runs once per written row.
    """
    by_device: dict[torch.device, list[str]] = {}
    for key, value in values.items():
        by_device.setdefault(value.device, []).append(key)
    floats: dict[str, float] = {}
    for keys in by_device.values():
        stacked = torch.stack([values[k].detach().reshape(()).to(torch.float64) for k in keys])
        floats.update(zip(keys, stacked.tolist(), strict=True))
    return {key: floats[key] for key in values}


class BarebonesResults(Results):
    """What `self.log` feeds under `Trainer(barebones=True)`: nothing is recorded, as in Lightning,
    which warns that logging is off."""

    def log(self, name: str, value: Any, *args: Any, **kwargs: Any) -> None:
        warnings.warn(
            f"self.log({name!r}): `Trainer(barebones=True)` is configured, so logging is off "
            "(it can impact raw speed); the value is not recorded.",
            UserWarning,
            stacklevel=3,  # the user's self.log call
        )
