"""A config's `optimizer` and `lr_scheduler` blocks, applied to a module as LightningCLI applies them.

The optimizer is built from the module's parameters, the scheduler from the optimizer, and the
module's `configure_optimizers` is replaced by one returning them; a module that defines its own
gets LightningCLI's warning, since the config's blocks win. The `ltrain` command and
`ltrain.cli.LightningCLI` both come here, so the two cannot drift apart.
"""

from __future__ import annotations

import functools
import types
import warnings
from collections.abc import Callable, Mapping
from typing import Any

from ltrain.app.config import instantiate
from ltrain.app.signatures import import_qualified


def configure_optimizers(lightning_module: Any, optimizer: Any, lr_scheduler: Any = None) -> Any:
    """LightningCLI's `configure_optimizers`: the optimizer alone, the pair as lists, or, for a
    scheduler that watches a metric (`ReduceLROnPlateau` with its `monitor`), Lightning's dict."""
    if lr_scheduler is None:
        return optimizer
    monitor = getattr(lr_scheduler, "monitor", None)
    if monitor is not None:
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": lr_scheduler, "monitor": monitor},
        }
    return [optimizer], [lr_scheduler]


def attach_optimizers(
    model: Any,
    optimizer: Mapping[str, Any],
    lr_scheduler: Mapping[str, Any] | None = None,
    configure: Callable[..., Any] = configure_optimizers,
    owner: str = "LightningCLI",
) -> None:
    """Build the resolved blocks for `model` and make `configure` its `configure_optimizers`."""
    from ltrain.module import Module

    built = _build(optimizer, model.parameters())
    scheduler = _build(lr_scheduler, built) if lr_scheduler is not None else None
    if type(model).configure_optimizers is not Module.configure_optimizers:
        warnings.warn(
            f"`{type(model).__name__}.configure_optimizers` will be overridden by "
            f"`{owner}.configure_optimizers`.",
            stacklevel=2,
        )
    method = functools.partial(configure, optimizer=built, lr_scheduler=scheduler)
    functools.update_wrapper(method, configure)
    model.configure_optimizers = types.MethodType(method, model)


def _build(spec: Mapping[str, Any], first: Any) -> Any:
    """A class whose first argument the app passes: the parameters, or the optimizer."""
    arguments = {k: instantiate(v) for k, v in (spec.get("init_args") or {}).items()}
    return import_qualified(spec["class_path"])(first, **arguments)
