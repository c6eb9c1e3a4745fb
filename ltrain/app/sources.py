"""Where a command's config comes from: files, LightningCLI's flags, the environment, `--set`.

One config is put together from its sources in the order they apply, later ones winning:

    defaults (a LightningCLI script's)  ->  environment (PL_FIT__TRAINER__MAX_EPOCHS, when asked)
    ->  ltrain's CONFIG  ->  --config FILE / --KEY=VALUE, in the order typed  ->  --set KEY=VALUE

Merging is jsonargparse's, so a stack of LightningCLI configs means what it meant there: mappings
merge key by key, a list is replaced whole, and a class whose `class_path` changes keeps the
`init_args` given so far, of which the checker later keeps those the new class takes (`carried`).
`--trainer.callbacks+=EarlyStopping` appends, and `--trainer.callbacks.monitor=x` then sets an
argument of the last callback. Each source is recorded against every key it wrote (`Origins`), so
a problem found later names the file, flag or variable to fix.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from ltrain.app.errors import ConfigError
from ltrain.app.overrides import apply_override, parse_value

PRINT_CONFIG_FLAGS = ("skip_null",)
SPEC_KEYS = ("class_path", "init_args", "dict_kwargs")


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
            f"{path}: the top level must be a mapping of config keys (model, trainer, ...); "
            f"got a {type(config).__name__}"
        )
    return config


@dataclass(frozen=True)
class Argument:
    """One LightningCLI argument: a config file, or a value for a dotted key."""

    key: str  # "config" for a file; else the dotted key, e.g. trainer.max_epochs
    value: str
    words: tuple[str, ...]  # as typed: ("--trainer.max_epochs=3",) or ("--model.lr", "1e-3")
    append: bool = False  # --KEY+=VALUE

    @property
    def text(self) -> str:
        return " ".join(self.words)


@dataclass(frozen=True)
class Sources:
    """A command's config sources as typed: CONFIG, LightningCLI's arguments, then `--set`."""

    config: str | None = None
    arguments: tuple[Argument, ...] = ()
    overrides: tuple[str, ...] = ()
    # `--print_config`'s flags (skip_null), or None when it was not given
    print_config: tuple[str, ...] | None = None

    @property
    def files(self) -> list[str]:
        """The config files, CONFIG first."""
        given = [a.value for a in self.arguments if a.key == "config"]
        return [self.config, *given] if self.config else given

    def words(self) -> list[str]:
        """The command-line words that give these sources again (for "Resume with: ...")."""
        config = [self.config] if self.config else []
        arguments = [word for argument in self.arguments for word in argument.words]
        sets = [word for text in self.overrides for word in ("--set", text)]
        return [*config, *arguments, *sets]

    def with_overrides(self, overrides: Sequence[str]) -> Sources:
        return replace(self, overrides=tuple(overrides))


@dataclass(frozen=True)
class Environment:
    """LightningCLI's `default_env`: variables named for keys, `PL_FIT__TRAINER__MAX_EPOCHS`."""

    prefix: str  # up to the key: "PL_FIT__" (a subcommand's), "PL_" (no subcommand)
    variables: Mapping[str, str]
    keys: Sequence[str]  # the top-level keys a variable may name


def parse_arguments(
    words: Sequence[str], overrides: Sequence[str] = (), positional: bool = True
) -> Sources:
    """Read LightningCLI's arguments from `words`: `--config FILE` (or `-c`), `--KEY=VALUE`,
    `--KEY VALUE`, `--KEY+=VALUE`, `--print_config[=skip_null]`; with `positional`, one bare word
    first is ltrain's CONFIG. `overrides` are the command's `--set`s."""
    config, print_config = None, None
    arguments: list[Argument] = []
    index = 0
    while index < len(words):
        word = words[index]
        index += 1
        if not word.startswith("-") or word == "-":
            if positional and config is None and not arguments:
                config = word
                continue
            raise ConfigError(
                f"{word}: unexpected argument; options are --KEY=VALUE or --config FILE"
            )
        name, has_value, value = word.lstrip("-").partition("=")
        if word.startswith("--print_config"):
            print_config = _print_config_flags(word, value if has_value else "")
            continue
        if word in ("-c", "--config") or word.startswith("--config="):
            name = "config"
        elif not word.startswith("--") or not name:
            raise ConfigError(f"{word}: unknown option; LightningCLI's options are --KEY=VALUE")
        append = name.endswith("+")
        key = name.removesuffix("+")
        typed: tuple[str, ...] = (word,)
        if not has_value:
            if index == len(words) or words[index].startswith("--"):
                raise ConfigError(f"{word}: expected a value, e.g. {word}=VALUE or {word} VALUE")
            value = words[index]
            index += 1
            typed = (word, value)
        if not all(part.isidentifier() or part.isdigit() for part in key.split(".")):
            raise ConfigError(f"{word}: {key!r} is not a dotted key such as trainer.max_epochs")
        arguments.append(Argument(key, value, typed, append))
    return Sources(config, tuple(arguments), tuple(overrides), print_config)


def _print_config_flags(word: str, value: str) -> tuple[str, ...]:
    flags = tuple(flag for flag in value.split(",") if flag)
    for flag in flags:
        if flag not in PRINT_CONFIG_FLAGS:
            raise ConfigError(f"{word}: unknown flag {flag!r}; ltrain knows {PRINT_CONFIG_FLAGS}")
    return flags


class Origins:
    """Which source last wrote each dotted key: a file, a flag, a variable or a `--set`.

    A problem at a key is charged to the key's own origin, else to its nearest ancestor's, else to
    the config files (`fallback`). Replacing a value forgets what its old children came from.
    """

    def __init__(self, fallback: str | None = None) -> None:
        self.labels: dict[str, str] = {}
        self.carried: set[str] = set()  # init_args kept across a class_path change, unchecked yet
        self.fallback = fallback

    def wrote(self, path: str, value: Any, label: str, replace: bool = True) -> None:
        if replace:
            for known in [k for k in self.labels if k.startswith(f"{path}.")]:
                del self.labels[known]
            self.carried = {k for k in self.carried if not k.startswith(f"{path}.")}
        self.labels[path] = label
        self.carried.discard(path)
        if replace and isinstance(value, Mapping):
            for key, child in value.items():
                self.wrote(f"{path}.{key}", child, label)
        elif replace and isinstance(value, list):
            for index, child in enumerate(value):
                self.wrote(f"{path}.{index}", child, label)

    def where(self, key: str) -> str | None:
        parts = key.split(".")
        for end in range(len(parts), 0, -1):
            label = self.labels.get(".".join(parts[:end]))
            if label is not None:
                return label
        return self.fallback

    def located(self, key: str, text: str) -> str:
        """A problem's line, ending with where its value came from."""
        where = self.where(key)
        return f"{key}: {text} ({where})" if where else f"{key}: {text}"


@dataclass
class Gathered:
    """A config put together from its sources, before checking."""

    config: dict[str, Any]
    origins: Origins
    files: list[str] = field(default_factory=list)
    modules: list[str] = field(default_factory=list)  # where bare class names may be defined


def gather(
    sources: Sources,
    defaults: Mapping[str, Any] | None = None,
    default_files: Sequence[str] = (),
    environment: Environment | None = None,
    base: tuple[Mapping[str, Any], str] | None = None,
    after: tuple[Mapping[str, Any], str] | None = None,
) -> Gathered:
    """Put one config together from everything that sets it, in the order of the module docstring.

    `defaults` are by dotted key (a script's `set_defaults`, `trainer_defaults`); `base` is a
    whole config and its label (a checkpoint's stored config, a script's `args` mapping), and
    `after` one that goes over everything (a checkpoint's hyperparameters, for LightningCLI).
    """
    gatherer = Gatherer()
    for key, value in (defaults or {}).items():
        gatherer.set_value(key, value, "defaults")
    for path in default_files:
        if os.path.isfile(path):  # jsonargparse reads only those that exist
            gatherer.read_file(path)
    if environment is not None:
        gatherer.read_environment(environment)
    if base is not None:
        gatherer.merge_mapping(*base)
        gatherer.labels.append(base[1])
    if sources.config is not None:
        gatherer.read_file(sources.config)
    for argument in sources.arguments:
        gatherer.apply(argument)
    for text in sources.overrides:
        gatherer.apply_set(text)
    if after is not None:
        gatherer.merge_mapping(*after)
    return gatherer.result()


class Gatherer:
    """Applies sources to one config in order, recording the origin of every key written."""

    def __init__(self) -> None:
        self.config: dict[str, Any] = {}
        self.origins = Origins()
        self.modules: list[str] = []  # of every dotted class_path written, replaced ones too
        self.files: list[str] = []
        self.labels: list[str] = []  # the whole configs read: a problem nobody wrote is theirs

    def result(self) -> Gathered:
        self.origins.fallback = ", ".join(self.labels) or None
        return Gathered(self.config, self.origins, self.files, self.modules)

    def read_environment(self, environment: Environment) -> None:
        """A config in `<prefix>CONFIG` (a path or YAML text), then one variable per key."""
        config = environment.variables.get(f"{environment.prefix}CONFIG")
        name = f"{environment.prefix}CONFIG"
        if config is not None and os.path.isfile(config):
            self.read_file(config, name)
        elif config is not None:
            value = parse_value(config)
            if not isinstance(value, Mapping):
                raise ConfigError(f"{name}: expected a config file or YAML mapping, got {config!r}")
            self.merge_mapping(value, name)
        for name, text in sorted(environment.variables.items()):
            if not name.startswith(environment.prefix) or name == f"{environment.prefix}CONFIG":
                continue
            key = name[len(environment.prefix) :].lower().replace("__", ".")
            if key.partition(".")[0] in environment.keys:
                self.set_value(key, parse_value(text), f"{name}={text}")

    def read_file(self, path: str, option: str = "") -> None:
        """Merge a config file; `option` is how it was given (`--config`), for messages."""
        try:
            data = load_yaml(path)
        except ConfigError as error:
            raise ConfigError(f"{option} {error}".strip()) from None
        self.files.append(path)
        self.labels.append(path)
        self.merge_mapping(data, path)

    def merge_mapping(self, data: Mapping[str, Any], label: str) -> None:
        for key, value in data.items():
            self.config[key] = self._merge(self.config.get(key), value, key, label)

    def apply(self, argument: Argument) -> None:
        """One LightningCLI argument: a file, or a value for a dotted key."""
        if argument.key == "config":
            self.read_file(argument.value, "--config")
            return
        self.set_value(argument.key, parse_value(argument.value), argument.text, argument.append)

    def apply_set(self, text: str) -> None:
        """ltrain's `--set KEY=VALUE`: a plain assignment (overrides.py)."""
        self.origins.wrote(apply_override(self.config, text), None, f"--set {text}")

    def set_value(self, key: str, value: Any, label: str, append: bool = False) -> None:
        """`--KEY=VALUE` as jsonargparse applies it. `init_args` may be left out of KEY, a bare
        class name given arguments becomes a class (`--optimizer=Adam --optimizer.lr=0.1`), and a
        list's last item is meant where KEY names no index (`--trainer.callbacks.monitor=x`)."""
        parts = key.split(".")
        node: Any = self.config
        walked: list[str] = []
        created: list[str] = []
        i = 0
        while True:
            part, last = parts[i], i == len(parts) - 1
            if _is_spec(node) and part not in SPEC_KEYS:
                node = _arguments_of(node)
                walked.append("init_args")
            if isinstance(node, list):
                where = ".".join(walked)
                if not node:
                    raise ConfigError(
                        f"{label}: {where} is empty; add an item first (--{where}+=...)"
                    )
                index = int(part) if part.isdigit() else len(node) - 1
                if index >= len(node):
                    raise ConfigError(f"{label}: {where} has {len(node)} items, no item {index}")
                walked.append(str(index))
                if part.isdigit():  # an index consumes its part; else the part is the item's
                    if last:
                        path = ".".join(walked)
                        node[index] = self._merge(node[index], value, path, label)
                        return
                    i += 1
                node[index] = _as_spec(node[index])
                node = node[index]
                continue
            if not isinstance(node, dict):
                raise ConfigError(f"{label}: {'.'.join(walked)} is {node!r}, which has no {part!r}")
            walked.append(part)
            path = ".".join(walked)
            if last:
                break
            if node.get(part) is None:
                node[part] = {}
                created.append(path)
            node[part] = _as_spec(node[part])
            node = node[part]
            i += 1
        for ancestor in created:
            self.origins.wrote(ancestor, None, label, replace=False)
        if part == "class_path" and _is_spec(node):  # a class change carries the arguments
            parent = path.rpartition(".")[0]
            merged = self._merge(dict(node), {"class_path": value}, parent, label)
            node.clear()
            node.update(merged)
        elif append:
            items = node.get(part)
            items = [] if items is None else list(items) if isinstance(items, list) else [items]
            node[part] = [*items, value]
            self.origins.wrote(path, None, label, replace=False)
            self.origins.wrote(f"{path}.{len(items)}", value, label)
        else:
            node[part] = self._merge(node.get(part), value, path, label)

    def _merge(self, old: Any, new: Any, path: str, label: str) -> Any:
        """`new` over `old` as jsonargparse merges a later config into an earlier one."""
        if isinstance(old, str) and isinstance(new, Mapping) and "class_path" not in new:
            old = {"class_path": old}  # `--model=MyModel`, then its arguments
        elif _is_arguments(old) and "." not in path and (isinstance(new, str) or _is_spec(new)):
            # a top-level class's arguments, then the class: they are its own, checked as given
            old = {"class_path": _as_spec(new)["class_path"], "init_args": old}
        if _is_spec(old) and isinstance(new, (str, Mapping)):
            return self._merge_spec(old, new, path, label)
        if isinstance(old, Mapping) and isinstance(new, Mapping):
            merged = dict(old)
            for key, value in new.items():
                merged[key] = self._merge(old.get(key), value, f"{path}.{key}", label)
            self.origins.wrote(path, merged, label, replace=False)
            return merged
        self.origins.wrote(path, new, label)
        self._note_modules(new, path.rpartition(".")[2])
        return copy.deepcopy(new)

    def _note_modules(self, value: Any, key: str) -> None:
        if key == "class_path" and isinstance(value, str) and "." in value:
            self.modules.append(value.rpartition(".")[0])
        elif isinstance(value, Mapping):
            for child_key, child in value.items():
                self._note_modules(child, child_key)
        elif isinstance(value, list):
            for child in value:
                self._note_modules(child, "")

    def _merge_spec(self, old: Mapping[str, Any], new: Any, path: str, label: str) -> Any:
        """A class over a class: same class, arguments merge; another class, they are carried
        (the checker keeps those it takes); a mapping without `class_path` is arguments."""
        if isinstance(new, str):
            new = {"class_path": new}
        elif not set(new) & set(SPEC_KEYS):
            new = {"init_args": new}
        merged = dict(old)
        old_arguments = dict(old.get("init_args") or {})
        for key, value in new.items():
            if key != "init_args":
                merged[key] = self._merge(old.get(key), value, f"{path}.{key}", label)
        if merged["class_path"] != old["class_path"]:
            self.origins.carried |= {f"{path}.init_args.{name}" for name in old_arguments}
        new_arguments = new.get("init_args") or {}
        merged["init_args"] = self._merge(old_arguments, new_arguments, f"{path}.init_args", label)
        self.origins.wrote(path, None, label, replace=False)
        return merged


def _is_spec(value: Any) -> bool:
    return isinstance(value, Mapping) and "class_path" in value


def _is_arguments(value: Any) -> bool:
    return isinstance(value, Mapping) and bool(value) and not set(value) & set(SPEC_KEYS)


def _as_spec(value: Any) -> Any:
    """A bare class name about to be given arguments is a class spec."""
    return {"class_path": value, "init_args": {}} if isinstance(value, str) else value


def _arguments_of(spec: dict[str, Any]) -> dict[str, Any]:
    if spec.get("init_args") is None:  # missing, or `init_args: null` in the YAML
        spec["init_args"] = {}
    return spec["init_args"]
