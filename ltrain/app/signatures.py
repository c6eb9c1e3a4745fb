"""The classes a config may name by a short name, and their signatures kept as data (signatures.json).

`config.resolve()` checks `init_args` against `__init__` signatures, and importing `ltrain.zoo` or
`ltrain.trainer` just to read theirs costs seconds (torch), while `ltrain config` should answer at
once. So the signatures of ltrain's own config classes (the short names below and the Trainer) are
written once from the imported classes into signatures.json, and read from there:

    python -m ltrain.app.signatures    # rewrite signatures.json after changing one of them

The file also holds the Trainer methods' signatures (a LightningCLI subcommand's `ckpt_path`,
`verbose`, ...) and what ltrain knows of Lightning without importing it: the defaults of the
arguments Lightning's twin of a class has and ltrain's lacks (so `--print_config` output, which
lists every one, loads), and Lightning's callback and logger names (so a config naming one that
ltrain lacks is told so). Regenerating it therefore needs Lightning installed (the dev extra).

tests/test_cli.py regenerates the file and fails when it differs, and checks what is read back
against `inspect` on the imported classes. A hint is stored as the text of a Python expression and
evaluated, as `typing.get_type_hints` evaluates a postponed annotation, with builtins, `typing`,
`os`, `pathlib` and `collections.abc` for real and a stand-in (`ClassByName`) for every other class,
so `torch.nn.modules.module.Module` is a class known by that name and torch stays unimported. Every
other `class_path` is imported to be checked.
"""

from __future__ import annotations

import builtins
import collections.abc
import functools
import importlib
import inspect
import json
import os
import pathlib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SHORT_NAMES = {
    "EarlyStopping": "ltrain.callbacks.EarlyStopping",
    "ModelCheckpoint": "ltrain.callbacks.ModelCheckpoint",
    "ModelSummary": "ltrain.callbacks.ModelSummary",
    "LearningRateMonitor": "ltrain.callbacks.LearningRateMonitor",
    "TQDMProgressBar": "ltrain.callbacks.TQDMProgressBar",
    "CSVLogger": "ltrain.loggers.CSVLogger",
    "TensorBoardLogger": "ltrain.loggers.TensorBoardLogger",
    "WandbLogger": "ltrain.loggers.WandbLogger",
    "MLFlowLogger": "ltrain.loggers.MLFlowLogger",
    "MLflowLogger": "ltrain.loggers.MLflowLogger",
    "Digits": "ltrain.data.Digits",
    "MNIST": "ltrain.data.MNIST",
    "CIFAR10": "ltrain.data.CIFAR10",
    "MLPClassifier": "ltrain.zoo.MLPClassifier",
    "CNNClassifier": "ltrain.zoo.CNNClassifier",
    "ImageClassifier": "ltrain.zoo.ImageClassifier",
    "TwoBranchMLP": "ltrain.zoo.TwoBranchMLP",
    "SmallCNN": "ltrain.zoo.SmallCNN",
}

TRAINER = "ltrain.trainer.Trainer"

# the Trainer methods a LightningCLI subcommand calls; their arguments are config keys too
METHODS = tuple(f"{TRAINER}.{name}" for name in ("fit", "validate", "test", "predict"))

# Lightning's classes that ltrain's mirror. A config written for Lightning names arguments that
# ltrain's twin lacks (`trainer.max_time: null` in every `--print_config`); their Lightning defaults
# are kept here, so such a config loads as long as it leaves them at those defaults.
LIGHTNING_TWINS = {
    TRAINER: "lightning.pytorch.Trainer",
    **{f"{TRAINER}.{name}": f"lightning.pytorch.Trainer.{name}" for name in ("fit", "validate")},
    **{f"{TRAINER}.{name}": f"lightning.pytorch.Trainer.{name}" for name in ("test", "predict")},
    **{
        dotted: dotted.replace("ltrain.", "lightning.pytorch.", 1)
        for dotted in SHORT_NAMES.values()
        if dotted.startswith(("ltrain.callbacks.", "ltrain.loggers."))
    },
}

DATA_FILE = Path(__file__).with_name("signatures.json")

# what a stored hint's names mean; any other name starts the dotted name of a stand-in
_REAL_NAMES: dict[str, Any] = {
    **{name: getattr(builtins, name) for name in ("int", "float", "str", "bool", "bytes")},
    **{name: getattr(builtins, name) for name in ("complex", "list", "dict", "tuple", "set")},
    "Any": typing.Any,
    "Literal": typing.Literal,
    "typing": typing,
    "os": os,
    "pathlib": pathlib,
    "collections": collections,
}


class ClassByName(type):
    """The metaclass of stand-ins: classes known by a dotted name only, never imported.

    `stand_in("torch").nn.Module` is the stand-in for `torch.nn.Module`. Stand-ins with one name are
    equal, so hints built from them compare (and deduplicate in unions) like real ones.
    """

    dotted: str

    def __getattr__(cls, name: str) -> type:
        if name.startswith("_"):  # typing probes private and dunder names, which are no classes
            raise AttributeError(name)
        return stand_in(f"{cls.dotted}.{name}")

    def __eq__(cls, other: object) -> bool:
        if isinstance(other, ClassByName):
            return cls.dotted == other.dotted
        return NotImplemented

    def __hash__(cls) -> int:
        return hash(cls.dotted)


def stand_in(dotted: str) -> type:
    """A class that stands for `dotted` (e.g. `torch.nn.Module`) in hints, without importing it."""
    module, _, name = dotted.rpartition(".")
    return ClassByName(name, (), {"dotted": dotted, "__module__": module, "__qualname__": name})


def import_qualified(dotted: str) -> Any:
    """Import `module.Class`, `module.Outer.Inner` or `module.Class.method`: the longest module
    that imports, then attributes."""
    parts = dotted.split(".")
    for split in range(len(parts) - 1, 0, -1):
        try:
            target: Any = importlib.import_module(".".join(parts[:split]))
        except ModuleNotFoundError:
            continue
        for attribute in parts[split:]:
            target = getattr(target, attribute)
        return target
    raise ImportError(f"cannot import {dotted}")


@dataclass(frozen=True)
class ClassInfo:
    """A class known from signatures.json: where it is defined, its `__init__`, its bases."""

    # module.Class, where the class is defined
    path: str
    # as inspect.signature(cls) gives it: no `self`
    signature: inspect.Signature
    # as typing.get_type_hints(cls.__init__) gives them, with stand-ins for classes
    hints: dict[str, Any]
    # the dotted path of every class in its MRO but `object`
    ancestors: frozenset[str]
    # Lightning's twin's defaults for the arguments ltrain's lacks or defaults differently
    lightning_defaults: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.path.rpartition(".")[2]

    def derives_from(self, dotted: str) -> bool | None:
        """Whether the class subclasses the class named `dotted`; None when only importing can tell.

        Outside ltrain a class may claim subclasses it does not have in its MRO (an ABC's
        `__subclasshook__`), so only ltrain's own classes are answered "no" from the data.
        """
        if dotted in self.ancestors:
            return True
        return False if dotted.startswith("ltrain.") else None


def read_class(dotted: str) -> ClassInfo | None:
    """The class `dotted` names (`ltrain.zoo.MLPClassifier`), if signatures.json holds it."""
    data = _stored()
    path = data["names"].get(dotted, dotted)
    entry = data["classes"].get(path)
    if entry is None:
        return None
    parameters, hints = [], {}
    for item in entry["parameters"]:
        kind = getattr(inspect.Parameter, item["kind"])
        default = item.get("default", inspect.Parameter.empty)
        parameters.append(inspect.Parameter(item["name"], kind, default=default))
        if "hint" in item:
            hints[item["name"]] = _hint(item["hint"])
    twin = data["lightning"]["defaults"].get(path, {})
    signature = inspect.Signature(parameters)
    return ClassInfo(path, signature, hints, frozenset(entry["ancestors"]), twin)


def public_path(path: str) -> str:
    """The shortest name a user imports a known class by (`ltrain.callbacks.EarlyStopping`).

    LightningCLI prints class paths this way (jsonargparse's shortest import path); `path` itself
    is returned for a class outside the signature data.
    """
    aliases = [name for name, target in _stored()["names"].items() if target == path]
    own = path.rpartition(".")[2]
    return min(aliases, key=lambda name: (len(name), not name.endswith(own)), default=path)


def lightning_names() -> dict[str, list[str]]:
    """Lightning's public callback and logger names, e.g. {"callbacks": ["BackboneFinetuning", ...]}."""
    return _stored()["lightning"]["names"]


@functools.cache
def _stored() -> dict[str, Any]:
    return json.loads(DATA_FILE.read_text(encoding="utf-8"))


class _Names(dict):
    """An evaluation namespace in which every name not defined is a stand-in's first part."""

    def __missing__(self, name: str) -> type:
        return stand_in(name)


def _hint(text: str) -> Any:
    hint = eval(text, {"__builtins__": {}}, _Names(_REAL_NAMES))  # noqa: S307 - our own file
    return type(None) if hint is None else hint


# ---------------------------------------------------------------------- writing signatures.json
def signature_data() -> dict[str, Any]:
    """What signatures.json holds, read from the imported classes (so this imports torch)."""
    names: dict[str, str] = {}
    classes: dict[str, Any] = {}
    twins: dict[str, Any] = {}
    compared: set[str] = set()
    for dotted in sorted({*SHORT_NAMES.values(), TRAINER, *METHODS}):
        target = import_qualified(dotted)
        path = _dotted(target)
        if path != dotted:
            names[dotted] = path
        function = target.__init__ if inspect.isclass(target) else target
        hints = typing.get_type_hints(function)
        parameters = []
        for parameter in _parameters(target):
            item: dict[str, Any] = {"name": parameter.name, "kind": parameter.kind.name}
            if parameter.name in hints:
                item["hint"] = _hint_text(hints[parameter.name])
            if parameter.default is not parameter.empty:
                item["default"] = _json_value(parameter.default, f"{path}({parameter.name}=...)")
            parameters.append(item)
        mro = target.__mro__ if inspect.isclass(target) else ()
        ancestors = [_dotted(base) for base in mro if base is not object]
        classes[path] = {"ancestors": ancestors, "parameters": parameters}
        if dotted in LIGHTNING_TWINS and path not in compared:  # an alias (MLflowLogger) once
            compared.add(path)  # Lightning has MLFlowLogger only, sorted before the alias
            defaults = _twin_defaults(target, import_qualified(LIGHTNING_TWINS[dotted]))
            if defaults:
                twins[path] = defaults
    lightning = {"defaults": twins, "names": _lightning_public_names()}
    return {"names": names, "classes": classes, "lightning": lightning}


def _parameters(target: Any) -> list[inspect.Parameter]:
    """A class's `__init__` parameters, or a method's, without `self`."""
    parameters = list(inspect.signature(target).parameters.values())
    return parameters if inspect.isclass(target) else parameters[1:]


def _twin_defaults(ours: Any, theirs: Any) -> dict[str, Any]:
    """Lightning's defaults for the arguments ours lacks or defaults differently (json-safe ones)."""
    mine = {p.name: p for p in _parameters(ours)}
    found = {}
    for parameter in _parameters(theirs):
        if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
            continue
        if parameter.default is parameter.empty:
            continue
        same = parameter.name in mine and repr(mine[parameter.name].default) == repr(
            parameter.default
        )
        if not same:
            found[parameter.name] = _json_value(
                parameter.default, f"{_dotted(theirs)}.{parameter.name}"
            )
    return found


def _lightning_public_names() -> dict[str, list[str]]:
    names = {}
    for package in ("callbacks", "loggers"):
        module = importlib.import_module(f"lightning.pytorch.{package}")
        names[package] = sorted(n for n in module.__all__ if n[0].isupper())
    return names


def signatures_json(data: dict[str, Any]) -> str:
    """The file's text: one line per parameter, so a changed signature is a one-line diff."""

    def lines(items: list[str], indent: int) -> str:
        return ",\n".join(" " * indent + item for item in items)

    names = lines([f"{json.dumps(k)}: {json.dumps(v)}" for k, v in data["names"].items()], 4)
    classes = [
        f"    {json.dumps(path)}: {{\n"
        f'      "ancestors": {json.dumps(entry["ancestors"])},\n'
        f'      "parameters": [\n{lines([json.dumps(p) for p in entry["parameters"]], 8)}\n'
        "      ]\n"
        "    }"
        for path, entry in data["classes"].items()
    ]
    classes_text = ",\n".join(classes)
    twins = lines(
        [f"{json.dumps(k)}: {json.dumps(v)}" for k, v in data["lightning"]["defaults"].items()], 6
    )
    lightning_names = lines(
        [f"{json.dumps(k)}: {json.dumps(v)}" for k, v in data["lightning"]["names"].items()], 6
    )
    return (
        f'{{\n  "names": {{\n{names}\n  }},\n  "classes": {{\n{classes_text}\n  }},\n'
        f'  "lightning": {{\n    "defaults": {{\n{twins}\n    }},\n'
        f'    "names": {{\n{lightning_names}\n    }}\n  }}\n}}\n'
    )


def _dotted(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _hint_text(hint: Any) -> str:
    """A hint as the expression `_hint` evaluates back to it."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is type(None):
        return "None"
    if hint is typing.Any:
        return "Any"
    if hint is Ellipsis:
        return "..."
    if origin is typing.Union or origin is types.UnionType:
        return " | ".join(_hint_text(a) for a in args)
    if origin is typing.Literal:
        return f"Literal[{', '.join(repr(a) for a in args)}]"
    if origin is not None:
        return f"{_hint_text(origin)}[{', '.join(_hint_text(a) for a in args)}]"
    if isinstance(hint, type):
        builtin = hint.__module__ == "builtins" and hint.__name__ in _REAL_NAMES
        return hint.__name__ if builtin else _dotted(hint)
    raise TypeError(f"cannot store the hint {hint!r}; teach signatures._hint_text its form")


def _json_value(value: Any, where: str) -> Any:
    """A default as JSON keeps it; a tuple or an object would come back as something else."""
    try:
        same = json.loads(json.dumps(value)) == value
    except (TypeError, ValueError):
        same = False
    if not same:
        raise TypeError(f"{where}: the default {value!r} does not survive JSON; pick a plain one")
    return value


if __name__ == "__main__":
    DATA_FILE.write_text(signatures_json(signature_data()), encoding="utf-8")
    print(f"wrote {DATA_FILE}")
