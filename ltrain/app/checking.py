"""Checking config values against `__init__` signatures and type hints, every problem collected.

`Checker` walks a value with the hint it must fit, normalising as it goes ('1e-3' becomes a float
where the hint wants one) and filling in the defaults of every class it meets. It never stops at
the first problem: each one is kept with its dotted key, so a config with three typos is fixed in
one edit, not three runs. ltrain's own classes are read from signature data (signatures.py) and
torch stays unimported; any other class is imported to read its signature.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import os
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ltrain.app.errors import ConfigError
from ltrain.app.signatures import SHORT_NAMES, ClassByName, ClassInfo, read_class, stand_in

# the class each slot must hold, where it is defined
SLOTS = {
    "model": "ltrain.module.Module",
    "data": "ltrain.data.datamodule.DataModule",
    "callback": "ltrain.callbacks.base.Callback",
    "logger": "ltrain.loggers.base.Logger",
}


def check_value(value: Any, hint: Any, key: str = "value") -> tuple[Any, list[str]]:
    """One value checked against one type hint as `resolve` checks it: (normalised, problems).

    `1e-3` written as text becomes a float where the hint wants one; a `{class_path, init_args}`
    value is checked against the class it names (which must fit a class hint) and filled in.
    """
    checker = Checker()
    normalised = checker.value(value, hint, key)
    return normalised, [f"{key}: {text}" for key, text in checker.problems]


class Checker:
    """Walks a config against signatures, collecting problems instead of stopping at the first."""

    def __init__(self) -> None:
        self.problems: list[tuple[str, str]] = []  # (dotted key, what is wrong with it)
        self.unchecked: list[str] = []

    def problem(self, key: str, text: str) -> None:
        self.problems.append((key, text))

    def unknown(self, key: str, name: str, valid: Sequence[str]) -> None:
        close = difflib.get_close_matches(name, list(valid), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else f"; valid keys: {', '.join(valid)}"
        self.problem(key, f"unknown key{hint}")

    def class_spec(self, spec: Any, key: str, slot: str | None = None, base: Any = None) -> Any:
        """Check `{class_path, init_args}` and return it resolved (full path, defaults filled)."""
        if not isinstance(spec, Mapping) or "class_path" not in spec:
            self.problem(
                key, f"expected {{class_path: ..., init_args: {{...}}}}, got {_short(spec)}"
            )
            return spec
        extra = set(spec) - {"class_path", "init_args"}
        for name in sorted(extra):
            self.unknown(f"{key}.{name}", name, ("class_path", "init_args"))
        path = spec["class_path"]
        target = self.import_target(path, f"{key}.class_path")
        if target is None:
            return dict(spec)
        if not self.fits(target, f"{key}.class_path", slot, base):
            return dict(spec)
        init_args = spec.get("init_args") or {}
        if not isinstance(init_args, Mapping):
            self.problem(f"{key}.init_args", f"expected a mapping, got {_short(init_args)}")
            return dict(spec)
        return {
            "class_path": class_path_of(target, path),
            "init_args": self.arguments(target, init_args, f"{key}.init_args"),
        }

    def import_target(self, path: Any, key: str) -> Any:
        if not isinstance(path, str) or not path:
            self.problem(key, f"expected a class name or dotted path, got {_short(path)}")
            return None
        dotted = SHORT_NAMES.get(path, path)
        module_name, _, attribute = dotted.rpartition(".")
        if not module_name:
            close = difflib.get_close_matches(path, list(SHORT_NAMES), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            self.problem(
                key,
                f"{path!r} is neither a built-in short name nor a dotted path (module.Class){hint}",
            )
            return None
        found = read_class(dotted)  # ltrain's own classes, without importing torch
        if found is not None:
            return found
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as error:
            self.problem(key, f"cannot import module {error.name!r} (from {path!r})")
            return None
        except Exception as error:
            self.problem(key, f"importing {module_name!r} failed: {type(error).__name__}: {error}")
            return None
        target = getattr(module, attribute, None)
        if target is None:
            self.problem(key, f"module {module_name!r} has no attribute {attribute!r}")
        return target

    def fits(self, target: Any, key: str, slot: str | None, base: Any) -> bool:
        """A slot's class must subclass the slot's base; a nested value must fit its type hint."""
        required = stand_in(SLOTS[slot]) if slot else base
        if required is None:
            if not (isinstance(target, ClassInfo) or callable(target)):
                self.problem(key, f"{_name(target)} is not a class or function")
                return False
            return True
        if isinstance(target, ClassInfo):
            ok = target.derives_from(class_path_of(required))
            if ok is None:  # a base outside ltrain, which may claim subclasses: ask the real one
                ok = issubclass(import_qualified(target.path), _real(required))
        elif slot is None and not inspect.isclass(target) and callable(target):
            return True  # a factory function (e.g. torchvision.models.resnet18): checked after the call
        else:
            ok = inspect.isclass(target) and issubclass(target, _real(required))
        if not ok:
            self.problem(
                key,
                f"{_name(target)} is not a {required.__name__} subclass, which "
                f"{slot or 'this value'} must be",
            )
        return ok

    def arguments(self, target: Any, given: Mapping[str, Any], key: str) -> dict[str, Any]:
        """Check `given` against `target`'s signature; return every argument, defaults included."""
        if isinstance(target, ClassInfo):
            signature, hints = target.signature, target.hints
        else:
            try:
                signature = inspect.signature(target)
            except (TypeError, ValueError):
                self.unchecked.append(key)
                return dict(given)
            hints = _type_hints(target)
        parameters = {
            name: p
            for name, p in signature.parameters.items()
            if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD) and name != "self"
        }
        takes_kwargs = any(p.kind == p.VAR_KEYWORD for p in signature.parameters.values())
        resolved: dict[str, Any] = {}
        for name, parameter in parameters.items():
            if name in given:
                resolved[name] = self.value(given[name], hints.get(name, Any), f"{key}.{name}")
            elif parameter.default is not parameter.empty:
                if _is_plain(parameter.default):
                    resolved[name] = parameter.default
            else:
                self.problem(f"{key}.{name}", "required argument missing")
        for name in given:
            if name in parameters:
                continue
            if takes_kwargs:
                self.unchecked.append(f"{key}.{name}")
                resolved[name] = given[name]
            else:
                self.unknown(f"{key}.{name}", name, list(parameters))
        return resolved

    def value(self, value: Any, hint: Any, key: str) -> Any:
        """Check one value against its hint; return it normalised (e.g. '1e-3' -> 0.001)."""
        ok, normalised = self._match(value, hint, key)
        if not ok:
            self.problem(key, f"expected {_describe(hint)}, got {_short(value)}")
        return normalised

    def _match(self, value: Any, hint: Any, key: str) -> tuple[bool, Any]:
        if hint is Any or hint is inspect.Parameter.empty or isinstance(hint, typing.TypeVar):
            if isinstance(value, Mapping) and "class_path" in value:
                return True, self.class_spec(value, key)
            return True, value
        origin = typing.get_origin(hint)
        args = typing.get_args(hint)
        if origin is typing.Union or origin is types.UnionType:
            ordered = sorted(args, key=lambda a: a is str)  # try str last: '1e-3' may be a float
            shape_fits = None  # an arm whose shape fits but whose contents don't: report those
            for arm in ordered:
                before = len(self.problems)
                ok, normalised = self._match(value, arm, key)
                if ok and len(self.problems) == before:
                    return True, normalised
                if ok and shape_fits is None:
                    shape_fits = (self.problems[before:], normalised)
                del self.problems[before:]
            if shape_fits is not None:
                self.problems.extend(shape_fits[0])
                return True, shape_fits[1]
            return False, value
        if hint is type(None) or hint is None:
            return value is None, value
        if origin is typing.Literal:
            # True == 1 and 0 == False: a bool matches only a bool, a number only a number
            return any(value == a and type(value) is type(a) for a in args), value
        if hint is bool:
            return isinstance(value, bool), value
        if hint is int:
            return isinstance(value, int) and not isinstance(value, bool), value
        if hint is float:
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                return True, float(value)
            if isinstance(value, str):
                try:
                    return True, float(value)
                except ValueError:
                    return False, value
            return False, value
        if hint is str:
            return isinstance(value, str), value
        if hint in (os.PathLike, Path) or (inspect.isclass(hint) and issubclass(hint, os.PathLike)):
            return isinstance(value, str), value
        if origin in (list, Sequence) or hint is list:
            if not isinstance(value, list):
                return False, value
            item_hint = args[0] if args else Any
            return True, [self.value(v, item_hint, f"{key}.{i}") for i, v in enumerate(value)]
        if origin is tuple or hint is tuple:
            if not isinstance(value, list):
                return False, value
            if args and args[-1] is not Ellipsis:
                if len(args) != len(value):
                    return False, value
                pairs = zip(value, args, strict=True)
                return True, [self.value(v, a, f"{key}.{i}") for i, (v, a) in enumerate(pairs)]
            item_hint = args[0] if args else Any
            return True, [self.value(v, item_hint, f"{key}.{i}") for i, v in enumerate(value)]
        if origin in (dict, Mapping) or hint in (dict, Mapping):
            if not isinstance(value, Mapping) or "class_path" in value:
                return False, value
            value_hint = args[1] if len(args) == 2 else Any
            return True, {k: self.value(v, value_hint, f"{key}.{k}") for k, v in value.items()}
        if inspect.isclass(hint):
            if isinstance(value, Mapping) and "class_path" in value:
                return True, self.class_spec(value, key, base=hint)
            # a stand-in has no instances; no YAML value is an instance of the class it names
            return isinstance(value, hint), value
        return True, value


def import_qualified(dotted: str) -> Any:
    """Import `module.Outer.Inner` where the class path may include nested attributes."""
    parts = dotted.split(".")
    for split in range(len(parts) - 1, 0, -1):
        try:
            target: Any = importlib.import_module(".".join(parts[:split]))
        except ModuleNotFoundError:
            continue
        for attribute in parts[split:]:
            target = getattr(target, attribute)
        return target
    raise ConfigError(f"cannot import {dotted}")


def class_path_of(target: Any, given: str | None = None) -> str:
    """`module.Class`: where a class (imported, known from signature data, or a stand-in) is defined.

    A class made inside a function has no importable qualified name; the path the config gave
    (`given`, short names expanded) is kept for it.
    """
    if isinstance(target, ClassInfo):
        return target.path
    path = f"{target.__module__}.{target.__qualname__}"
    if "<locals>" in path and given is not None:
        return SHORT_NAMES.get(given, given)
    return path


def _real(cls: type) -> type:
    """The class itself: a stand-in is imported now, since an imported class is checked against it."""
    return import_qualified(cls.dotted) if isinstance(cls, ClassByName) else cls


def _type_hints(target: Any) -> dict[str, Any]:
    """`__init__`'s hints, evaluated one by one so one unresolvable name doesn't hide the rest."""
    function = target.__init__ if inspect.isclass(target) else target
    try:
        return typing.get_type_hints(function)
    except Exception:
        pass
    hints: dict[str, Any] = {}
    namespace = getattr(inspect.getmodule(function), "__dict__", {})
    for name, annotation in getattr(function, "__annotations__", {}).items():
        if isinstance(annotation, str):
            try:
                annotation = eval(annotation, dict(namespace))  # noqa: S307 - the class's own annotation
            except Exception:
                continue
        hints[name] = annotation
    return hints


def _is_plain(value: Any) -> bool:
    if value is None or isinstance(value, (str, int, float, bool)):
        return True
    if isinstance(value, (list, tuple)):
        return all(_is_plain(v) for v in value)
    if isinstance(value, Mapping):
        return all(isinstance(k, str) and _is_plain(v) for k, v in value.items())
    return False


def _name(target: Any) -> str:
    if isinstance(target, ClassInfo):
        return target.name
    return getattr(target, "__qualname__", None) or type(target).__name__


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _describe(hint: Any) -> str:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin is typing.Union or origin is types.UnionType:
        return " or ".join(dict.fromkeys(_describe(a) for a in args))
    if hint is type(None) or hint is None:
        return "null"
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin in (list, Sequence, tuple) or hint in (list, tuple):
        return f"a list of {_describe(args[0])}" if args else "a list"
    if origin in (dict, Mapping) or hint in (dict, Mapping):
        return "a mapping"
    if inspect.isclass(hint):
        if hint in (int, float, str, bool):
            return hint.__name__
        return f"a {hint.__name__} ({{class_path: ..., init_args: ...}})"
    return str(hint)
