"""`save_hyperparameters`, `hparams` and `hparams_initial`, shared by `Module` and `DataModule`.

Lightning gives both classes one mixin, so a data module's `save_hyperparameters()` behaves as
a module's: the `__init__` arguments become `self.hparams`, go into `hparams.yaml` (merged with the
module's) and into checkpoints. One implementation here keeps the two from drifting apart.
"""

from __future__ import annotations

import copy
import inspect
import sys
from collections.abc import Mapping
from typing import Any


class AttributeDict(dict):
    """A dict whose keys read as attributes (`self.hparams.lr`), as in Lightning."""

    def __getattr__(self, key: str) -> Any:
        try:
            return self[key]
        except KeyError as missing:
            raise AttributeError(f"hparams has no {key!r}; it holds {sorted(self)}") from missing

    def __setattr__(self, key: str, value: Any) -> None:
        self[key] = value


class HyperparametersMixin:
    """The hyperparameters of a `Module` or `DataModule`; `_log_hyperparams` says whether the
    loggers get them (`save_hyperparameters(logger=False)` keeps them out)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._hparams: AttributeDict = AttributeDict()
        self._hparams_initial: AttributeDict = AttributeDict()
        self._log_hyperparams = False

    @property
    def hparams(self) -> AttributeDict:
        return self._hparams

    @property
    def hparams_initial(self) -> AttributeDict:
        return copy.deepcopy(self._hparams_initial)

    def save_hyperparameters(
        self,
        *args: Any,
        ignore: list[str] | str | None = None,
        frame: Any = None,
        logger: bool = True,
    ) -> None:
        """Capture the arguments of `__init__` into `self.hparams` (and `hparams.yaml`, checkpoints).

        With names (`save_hyperparameters("lr")`) only those are kept; with a dict, that dict.
        """
        ignored = {ignore} if isinstance(ignore, str) else set(ignore or ())
        if len(args) == 1 and isinstance(args[0], Mapping):
            hparams = dict(args[0])
        else:
            init_args = _init_args_of(self, frame or sys._getframe(1))
            names = [a for a in args if isinstance(a, str)]
            unknown = [n for n in names if n not in init_args]
            if unknown:
                raise ValueError(
                    f"save_hyperparameters: {unknown} are not arguments of "
                    f"{type(self).__name__}.__init__ (it takes {sorted(init_args)})"
                )
            hparams = {n: init_args[n] for n in names} if names else init_args
        hparams = {k: v for k, v in hparams.items() if k not in ignored}
        self._hparams = AttributeDict(hparams)
        self._hparams_initial = AttributeDict(copy.deepcopy(hparams))
        self._log_hyperparams = logger


def _init_args_of(owner: object, frame: Any) -> dict[str, Any]:
    """The arguments of every `__init__` frame of `owner` on the stack, innermost last.

    Walking all of them lets a base class call `save_hyperparameters()` for its subclasses.
    """
    frames = []
    while frame is not None:
        code = frame.f_code
        if code.co_name == "__init__" and frame.f_locals.get("self") is owner:
            frames.append(frame)
        frame = frame.f_back
    init_args: dict[str, Any] = {}
    for init_frame in reversed(frames):
        info = inspect.getargvalues(init_frame)
        for name in info.args:
            if name != "self":
                init_args[name] = info.locals[name]
        if info.keywords:
            init_args.update(info.locals[info.keywords])
        init_args.pop("__class__", None)
    return init_args
