"""Run configs: YAML loading, validation against real signatures, instantiation.

The `__init__` signatures are the schema. Every `class_path` is found, its `init_args` are bound
to the parameters and checked against their type hints (int, float, bool, str, Optional, Literal,
list, dict, nested classes), and every problem is collected with its dotted key before anything
is instantiated, so a typo costs a second, not a crashed run. ltrain's own classes are known from
signature data (signatures.py), because importing them imports torch and `ltrain config` should
answer at once; any other `class_path` is imported, and config targets are code: importing a
module runs it. Only classes that fit their slot are accepted.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ltrain.app.checking import Checker, import_qualified
from ltrain.app.errors import ConfigError
from ltrain.app.signatures import SHORT_NAMES, TRAINER, read_class

TOP_LEVEL_KEYS = ("name", "seed", "model", "data", "trainer")


# ---------------------------------------------------------------------- loading
def load_yaml(path: str | os.PathLike) -> dict[str, Any]:
    """Read a config file: a YAML mapping. Errors name the file (and the line for syntax errors)."""
    import yaml

    path = os.fspath(path)
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except (IsADirectoryError, PermissionError, UnicodeDecodeError) as error:
        raise ConfigError(f"{path}: cannot read the config file ({type(error).__name__})") from None
    try:
        config = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        line = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(error, "problem", None) or "invalid YAML"
        raise ConfigError(f"{path}:{line}: YAML syntax error: {problem}") from None
    if config is None:
        config = {}
    if not isinstance(config, dict):
        raise ConfigError(
            f"{path}: the top level must be a mapping with keys {', '.join(TOP_LEVEL_KEYS)}; "
            f"got a {type(config).__name__}"
        )
    return config


# ---------------------------------------------------------------------- resolving
@dataclass
class Resolved:
    """A validated config: the YAML-ready dict and the classes to build, found while checking."""

    config: dict[str, Any]
    unchecked: list[str] = field(default_factory=list)


def resolve(
    config: Mapping[str, Any],
    source: str | None = None,
    base_dir: str | None = None,
    set_by: Sequence[tuple[str, str]] = (),
) -> Resolved:
    """Validate every key and value; return the config with defaults filled and names expanded.

    All problems are collected and raised together as one ConfigError, each line ending with
    where its value came from: the `--set` that brought its key (`set_by`, from
    `apply_overrides`), else `source`, the file.
    """
    _make_importable(base_dir)
    checker = Checker()
    out: dict[str, Any] = {}
    for key in config:
        if key not in TOP_LEVEL_KEYS:
            checker.unknown(key, key, TOP_LEVEL_KEYS)
    name = config.get("name", "default")
    if not isinstance(name, str) or not name or "/" in name or name in (".", ".."):
        checker.problem("name", f"expected a folder name (text without '/'), got {name!r}")
    out["name"] = name
    seed = config.get("seed", 0)
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or seed < 0):
        checker.problem("seed", f"expected a non-negative int or null, got {seed!r}")
    out["seed"] = seed
    if config.get("model") is None:
        checker.problem("model", "missing; expected {class_path: ..., init_args: {...}}")
    else:
        out["model"] = checker.class_spec(config["model"], "model", slot="model")
    if config.get("data") is not None:
        out["data"] = checker.class_spec(config["data"], "data", slot="data")
    trainer = config.get("trainer") or {}
    if not isinstance(trainer, Mapping):
        checker.problem("trainer", f"expected a mapping of Trainer arguments, got {trainer!r}")
    else:
        target = read_class(TRAINER) or import_qualified(TRAINER)
        out["trainer"] = checker.arguments(target, trainer, "trainer")
    if checker.problems:
        raise ConfigError([_located(key, text, set_by, source) for key, text in checker.problems])
    return Resolved(out, checker.unchecked)


# ---------------------------------------------------------------------- instantiation
def instantiate(spec: Any) -> Any:
    """Build the object a resolved `{class_path, init_args}` describes (nested specs first)."""
    if isinstance(spec, Mapping) and "class_path" in spec:
        target = import_qualified(spec["class_path"])
        kwargs = {k: instantiate(v) for k, v in (spec.get("init_args") or {}).items()}
        return target(**kwargs)
    if isinstance(spec, list):
        return [instantiate(v) for v in spec]
    if isinstance(spec, Mapping):
        return {k: instantiate(v) for k, v in spec.items()}
    return spec


def imported_modules(config: Mapping[str, Any]) -> list[str]:
    """The modules a resolved config's class paths import (shown before running a checkpoint's config)."""
    found: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, Mapping):
            path = node.get("class_path")
            if isinstance(path, str):
                module = SHORT_NAMES.get(path, path).rpartition(".")[0]
                if module not in found:
                    found.append(module)
            for child in node.values():
                walk(child)
        elif isinstance(node, list):
            for child in node:
                walk(child)

    walk(config)
    return found


def to_yaml(config: Mapping[str, Any], header: str = "") -> str:
    """The resolved config as YAML that `load_yaml` reads back unchanged."""
    import yaml

    body = yaml.safe_dump(dict(config), sort_keys=False, default_flow_style=False)
    comments = "".join(f"# {line}\n" for line in header.splitlines())
    return comments + body


def config_keys(path: str | None) -> list[str]:
    """Dotted keys for `--set` completion, read without importing torch.

    The config file's own keys (with `init_args` left out, as `--set` allows), plus every
    argument of `Trainer.__init__`, from the signature data.
    """
    keys: list[str] = []
    if path:
        try:
            config = load_yaml(path)
        except ConfigError:
            config = {}

        def walk(node: Any, prefix: str) -> None:
            if isinstance(node, Mapping):
                for key, child in node.items():
                    if key == "init_args":
                        walk(child, prefix)
                        continue
                    dotted = f"{prefix}{key}"
                    keys.append(dotted)
                    walk(child, dotted + ".")
            elif isinstance(node, list):
                for index, child in enumerate(node):
                    walk(child, f"{prefix}{index}.")

        walk(config, "")
    trainer = read_class(TRAINER)
    if trainer is not None:
        keys += [f"trainer.{name}" for name in trainer.signature.parameters]
    keys += TOP_LEVEL_KEYS
    return list(dict.fromkeys(keys))


# ---------------------------------------------------------------------- helpers
def _located(key: str, text: str, set_by: Sequence[tuple[str, str]], source: str | None) -> str:
    """One problem's line, ending with where its value came from: the last `--set` whose key is
    the problem's or one above it, else the file."""
    for written, option in reversed(set_by):
        if key == written or key.startswith(f"{written}."):
            return f"{key}: {text} ({option})"
    return f"{key}: {text} ({source})" if source else f"{key}: {text}"


def _make_importable(base_dir: str | None) -> None:
    """The config's folder and the current directory hold users' modules (`my_models.py`)."""
    for folder in (os.getcwd(), base_dir):
        if folder and folder not in sys.path:
            sys.path.insert(0, folder)
