"""Checking config values against `__init__` signatures and type hints, every problem collected.

`Checker` walks a value with the hint it must fit, normalising as it goes ('1e-3' becomes a float
where the hint wants one) and filling in the defaults of every class it meets. It never stops at
the first problem: each one is kept with its dotted key, so a config with three typos is fixed in
one edit, not three runs. ltrain's own classes are read from signature data (signatures.py) and
torch stays unimported; any other class is imported to read its signature.
"""

from __future__ import annotations

import difflib
import inspect
import os
import types
import typing
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

from ltrain.app.names import find_class, real
from ltrain.app.signatures import SHORT_NAMES, ClassInfo, import_qualified

# the arguments of a class the app passes itself (an optimizer's `params`)
Skip = Collection[str]

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
    """Walks a config against signatures, collecting problems instead of stopping at the first.

    `carried` holds the dotted keys of `init_args` a merge carried over from a class the config
    then replaced (`--config base.yaml --model=Other`): as in jsonargparse, those the new class
    takes are kept and the others are dropped without a word, since nobody wrote them for it.
    `exempt` holds the arguments `link_arguments` fills in later: neither given nor missing.
    `modules` are those the sources' class paths named, imported before a bare name is looked up.
    """

    def __init__(
        self,
        carried: Collection[str] = (),
        exempt: Collection[str] = (),
        modules: Sequence[str] = (),
    ) -> None:
        self.problems: list[tuple[str, str]] = []  # (dotted key, what is wrong with it)
        self.unchecked: list[str] = []
        self.carried = frozenset(carried)
        self.exempt = frozenset(exempt)
        self.modules = modules  # where a bare class name may be defined (names.find_class)

    def problem(self, key: str, text: str) -> None:
        self.problems.append((key, text))

    def unknown(self, key: str, name: str, valid: Sequence[str]) -> None:
        close = difflib.get_close_matches(name, list(valid), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else f"; valid keys: {', '.join(valid)}"
        self.problem(key, f"unknown key{hint}")

    def class_spec(
        self, spec: Any, key: str, base: Any = None, role: str | None = None, skip: Skip = ()
    ) -> Any:
        """Check `{class_path, init_args}` and return it resolved (full path, defaults filled).

        `base` is what the class must derive from (a class, a stand-in or a tuple of them) and
        `role` names the slot in messages ("model must be"). A slot may be given as a bare class
        name, as LightningCLI allows (`optimizer: Adam`). `skip` names the arguments the app
        passes itself (an optimizer's `params`), which the config may not set.
        """
        if isinstance(spec, str) and role is not None:
            spec = {"class_path": spec}
        if not isinstance(spec, Mapping) or "class_path" not in spec:
            self.problem(
                key, f"expected {{class_path: ..., init_args: {{...}}}}, got {_short(spec)}"
            )
            return spec
        extra = set(spec) - {"class_path", "init_args"}
        for name in sorted(extra):
            self.unknown(f"{key}.{name}", name, ("class_path", "init_args"))
        path = spec["class_path"]
        target, problem = find_class(path, base, self.modules)
        if problem is not None:
            self.problem(f"{key}.class_path", problem)
            return dict(spec)
        if not self.fits(target, f"{key}.class_path", base, role):
            return dict(spec)
        init_args = spec.get("init_args") or {}
        if not isinstance(init_args, Mapping):
            self.problem(f"{key}.init_args", f"expected a mapping, got {_short(init_args)}")
            return dict(spec)
        return {
            "class_path": class_path_of(target, path),
            "init_args": self.arguments(target, init_args, f"{key}.init_args", skip),
        }

    def fits(self, target: Any, key: str, base: Any, role: str | None = None) -> bool:
        """A slot's class must subclass the slot's base; a nested value must fit its type hint."""
        if base is None:
            if not (isinstance(target, ClassInfo) or callable(target)):
                self.problem(key, f"{_name(target)} is not a class or function")
                return False
            return True
        bases = base if isinstance(base, tuple) else (base,)
        if role is None and not isinstance(target, ClassInfo) and not inspect.isclass(target):
            if callable(target):
                return True  # a factory function (e.g. torchvision.models.resnet18): checked after the call
        if not any(self._derives(target, b) for b in bases):
            names = " or ".join(b.__name__ for b in bases)
            self.problem(
                key,
                f"{_name(target)} is not a {names} subclass, which {role or 'this value'} must be",
            )
            return False
        return True

    @staticmethod
    def _derives(target: Any, base: Any) -> bool:
        if isinstance(target, ClassInfo):
            ok = target.derives_from(class_path_of(base))
            if ok is not None:
                return ok
            target = import_qualified(target.path)  # a base outside ltrain may claim subclasses
        return inspect.isclass(target) and issubclass(target, real(base))

    def arguments(
        self,
        target: Any,
        given: Mapping[str, Any],
        key: str,
        skip: Skip = (),
        hinted_defaults: bool = True,
    ) -> dict[str, Any]:
        """Check `given` against `target`'s signature; return every argument, defaults included
        (as their hints make them, unless `hinted_defaults` is off: jsonargparse keeps the raw
        defaults of a class a script fixes).

        An argument Lightning's twin of the class takes and ltrain's lacks (`trainer.max_time`)
        is accepted at Lightning's default, which is what a Lightning config says when it says
        nothing, and refused at any other value; ltrain cannot do what it asks.
        """
        if isinstance(target, ClassInfo):
            signature, hints, twin = target.signature, target.hints, target.lightning_defaults
        else:
            try:
                signature = inspect.signature(target)
            except (TypeError, ValueError):
                self.unchecked.append(key)
                return dict(given)
            hints, twin = _type_hints(target), {}
        parameters = {
            name: p
            for name, p in signature.parameters.items()
            if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
            and name != "self"
            and name not in skip
        }
        takes_kwargs = any(p.kind == p.VAR_KEYWORD for p in signature.parameters.values())
        resolved: dict[str, Any] = {}
        for name, parameter in parameters.items():
            hint, default, sub = hints.get(name, Any), parameter.default, _join(key, name)
            if sub in self.exempt:
                if name in given:
                    self.problem(sub, "set by link_arguments from another key; remove it")
                continue
            if name not in given:
                if default is parameter.empty:
                    self.problem(sub, "required argument missing")
                elif _is_plain(default) and hinted_defaults:
                    resolved[name] = self._as_hinted(default, hint)
                elif _is_plain(default):
                    resolved[name] = default
                continue
            value = given[name]
            if name in twin and _same(value, twin[name]) and default is not parameter.empty:
                if not self.fits_quietly(value, hint)[0]:
                    resolved[name] = default  # `precision: null`: Lightning's "the default"
                    continue
            if sub in self.carried:
                ok, normalised = self.fits_quietly(value, hint)
                if ok:
                    resolved[name] = normalised
                elif default is not parameter.empty:
                    resolved[name] = default
                continue
            resolved[name] = self.value(value, hint, sub)
        for name in given:
            sub = _join(key, name)
            if name in parameters or sub in self.carried:
                continue
            if name in skip:
                self.problem(sub, "ltrain passes this argument itself; remove it")
            elif name in twin:
                if not _same(given[name], twin[name]):
                    self.problem(
                        sub,
                        f"an argument of Lightning's {_name(target)} that ltrain's does not take; "
                        f"remove it or leave it at Lightning's default {_as_yaml(twin[name])}",
                    )
            elif takes_kwargs:
                self.unchecked.append(sub)
                resolved[name] = given[name]
            else:
                self.unknown(sub, name, list(parameters))
        return resolved

    def _as_hinted(self, default: Any, hint: Any) -> Any:
        """A default as jsonargparse prints it: an int default of a float argument is a float."""
        if isinstance(default, int) and not isinstance(default, bool):
            ok, normalised = self.fits_quietly(default, hint)
            if ok and isinstance(normalised, float):
                return normalised
        return default

    def fits_quietly(self, value: Any, hint: Any) -> tuple[bool, Any]:
        """Whether `value` fits `hint` (and its normalised form), recording no problem."""
        before = len(self.problems)
        ok, normalised = self._match(value, hint, "")
        ok = ok and len(self.problems) == before
        del self.problems[before:]
        return ok, normalised

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
            if isinstance(value, str) and _names_a_class(value):
                value = {"class_path": value}  # LightningCLI's `callbacks: EarlyStopping`
            if isinstance(value, Mapping) and "class_path" in value:
                return True, self.class_spec(value, key, base=hint)
            # a stand-in has no instances; no YAML value is an instance of the class it names
            return isinstance(value, hint), value
        return True, value


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


def _names_a_class(text: str) -> bool:
    """Whether a string given for a class names one (`EarlyStopping`, `my.Net`), as LightningCLI
    allows; other text (`'resnet'`) is reported as the wrong kind of value."""
    if text in SHORT_NAMES or (text.isidentifier() and text[0].isupper()):
        return True
    return "." in text and all(part.isidentifier() for part in text.split("."))


def _as_yaml(value: Any) -> str:
    """A plain value as a config writes it (null, true, 3)."""
    if value is None or isinstance(value, bool):
        return {None: "null", True: "true", False: "false"}[value]
    return repr(value)


def _join(key: str, name: str) -> str:
    return f"{key}.{name}" if key else name


def _same(value: Any, default: Any) -> bool:
    """Equal, and a bool only equals a bool (`0 == False` in Python, not in a config)."""
    return value == default and isinstance(value, bool) == isinstance(default, bool)


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
