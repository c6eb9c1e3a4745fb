"""`LambdaCallback`: a callback made of plain functions, one per hook."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ltrain.callbacks.base import Callback

HOOKS = tuple(
    name for name in vars(Callback) if name in ("setup", "teardown") or name.startswith("on_")
)


class LambdaCallback(Callback):
    """`LambdaCallback(on_train_epoch_end=fn, ...)`: each function is called as the hook it is
    named after, `fn(trainer, pl_module, *args)`; hooks not given do nothing."""

    def __init__(self, **hooks: Callable[..., Any] | None) -> None:
        for name, function in hooks.items():
            if name not in HOOKS:
                raise TypeError(
                    f"LambdaCallback got {name!r}, which is not a callback hook; hooks are "
                    f"{', '.join(HOOKS)}"
                )
            if function is not None:
                setattr(self, name, function)
