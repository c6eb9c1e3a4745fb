"""Run configs: the top-level keys, validation against real signatures, instantiation.

The `__init__` signatures are the schema. Every `class_path` is found, its `init_args` are bound
to the parameters and checked against their type hints (int, float, bool, str, Optional, Literal,
list, dict, nested classes), and every problem is collected with its dotted key before anything
is instantiated, so a typo costs a second, not a crashed run. ltrain's own classes are known from
signature data (signatures.py), because importing them imports torch and `ltrain config` should
answer at once; any other `class_path` is imported, and config targets are code: importing a
module runs it. Only classes that fit their slot are accepted.

One checker serves two layouts of top-level keys (`Layout`): the `ltrain` command's, which has
ltrain's `name` and `seed` next to LightningCLI's keys, and a LightningCLI script's, whose model
and data classes the script may fix (the config then gives their arguments only). The resolved
config is written two ways: ltrain's own view (`ltrain config`, config.yaml in a run folder) and
LightningCLI's (`--print_config`: every key, class paths as users import them).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from ltrain import __version__
from ltrain.app.checking import SLOTS, Checker, class_path_of
from ltrain.app.errors import ConfigError
from ltrain.app.names import LR_SCHEDULER_BASES, find_class, public_path
from ltrain.app.signatures import SHORT_NAMES, TRAINER, import_qualified, read_class, stand_in
from ltrain.app.sources import Gathered, Origins, Sources, gather, load_yaml

TOP_LEVEL_KEYS = ("name", "seed", "model", "data", "trainer")  # ltrain's own format
COMMANDS = ("fit", "validate", "test", "predict")
# a Trainer method's arguments a LightningCLI subcommand passes itself: never config keys
PASSED = frozenset({"model", "train_dataloaders", "val_dataloaders", "dataloaders", "datamodule"})
MAX_SEED = 2**32 - 1


@dataclass(frozen=True)
class Slot:
    """A top-level key that holds one object built from the config: `model`, `optimizer`, ..."""

    key: str
    # what its class must derive from: a class, a stand-in, or a tuple of them
    base: Any
    required: bool = False
    # the class a LightningCLI script fixes (`LightningCLI(MyModel)`): the key holds its arguments
    fixed: Any = None
    # arguments the app passes itself (an optimizer's `params`)
    skip: tuple[str, ...] = ()


OPTIMIZER = Slot("optimizer", stand_in("torch.optim.optimizer.Optimizer"), skip=("params",))
LR_SCHEDULER = Slot(
    "lr_scheduler", tuple(stand_in(base) for base in LR_SCHEDULER_BASES), skip=("optimizer",)
)


@dataclass(frozen=True)
class Layout:
    """The top-level keys a config may hold and what each one holds."""

    slots: tuple[Slot, ...] = (
        Slot("model", stand_in(SLOTS["model"]), required=True),
        Slot("data", stand_in(SLOTS["data"])),
        OPTIMIZER,
        LR_SCHEDULER,
    )
    # ltrain's `name`, `seed` and `search` (`ltrain search`'s block; other commands skip it)
    own_keys: bool = True
    # what no `seed` / `seed_everything` means: ltrain's 0, or the script's seed_everything_default
    seed_default: bool | int | None = 0
    # the subcommand (fit, validate, ...): its Trainer method's arguments are keys (`ckpt_path`)
    command: str | None = None
    trainer: Any = TRAINER
    # keys `link_arguments` sets (`model.init_args.num_classes`): a config may not
    links: frozenset[str] = frozenset()
    # the optimizer and scheduler keys that replace the module's configure_optimizers
    optimizers: tuple[str, str] | None = ("optimizer", "lr_scheduler")

    def for_command(self, command: str | None) -> Layout:
        return replace(self, command=command if command in COMMANDS else None)

    def method(self) -> Any:
        return read_class(f"{TRAINER}.{self.command}") if self.command else None

    def methods(self) -> list[Any]:
        """The Trainer methods whose arguments are keys: the subcommand's; with no subcommand,
        every one's for ltrain's view (`ltrain config`), none for a script run without one."""
        if self.command:
            return [self.method()]
        return [read_class(f"{TRAINER}.{c}") for c in COMMANDS] if self.own_keys else []

    def keys(self) -> list[str]:
        own = ["name", "seed", "search"] if self.own_keys else []
        slots = [slot.key for slot in self.slots]
        arguments = [
            name
            for method in self.methods()
            for name in [*method.signature.parameters, *method.lightning_defaults]
            if name not in PASSED
        ]
        return list(dict.fromkeys([*own, "seed_everything", "trainer", *slots, *arguments]))

    def checker_key(self, key: str) -> str:
        """A link target as problems name it: a fixed slot's arguments have no `init_args`."""
        head, _, rest = key.partition(".init_args.")
        fixed = any(slot.key == head and slot.fixed is not None for slot in self.slots)
        return f"{head}.{rest}" if fixed and rest else key


LTRAIN = Layout()


# ---------------------------------------------------------------------- resolving
@dataclass
class Resolved:
    """A validated config: the YAML-ready dict and the classes to build, found while checking."""

    config: dict[str, Any]
    unchecked: list[str] = field(default_factory=list)


def resolve(
    config: Mapping[str, Any],
    source: str | None = None,
    base_dir: str | Sequence[str] | None = None,
    *,
    origins: Origins | None = None,
    layout: Layout = LTRAIN,
    modules: Sequence[str] = (),
) -> Resolved:
    """Validate every key and value; return the config with defaults filled and names expanded.

    All problems are collected and raised together as one ConfigError, each line ending with
    where its value came from: per key from `origins` (the file, flag or `--set` that wrote it),
    else `source`. `modules` may define the classes a config names without a path (`MyModel`).
    """
    _make_importable([base_dir] if isinstance(base_dir, str) else base_dir or [])
    carried = origins.carried if origins is not None else ()
    exempt = {layout.checker_key(key) for key in layout.links}
    checker = Checker(carried, exempt, modules)
    trainer_class = _trainer_class(layout.trainer)
    trainer_arguments = _parameter_names(trainer_class)
    allowed = layout.keys()
    for key in config:
        if key in trainer_arguments and key not in allowed:
            checker.problem(key, f"unknown key; did you mean 'trainer.{key}'?")
        elif key not in allowed:
            checker.unknown(key, key, allowed)
    out: dict[str, Any] = {}
    if layout.own_keys:
        name = config.get("name", "default")
        if not isinstance(name, str) or not name or "/" in name or name in (".", ".."):
            checker.problem("name", f"expected a folder name (text without '/'), got {name!r}")
        out["name"] = name
        search = config.get("search")
        if search is not None and not isinstance(search, Mapping):
            checker.problem(
                "search", f"expected a mapping of `ltrain search` settings, got {search!r}"
            )
    out["seed"] = _seed(config, layout, checker)
    for slot in layout.slots[:2]:  # model and data come first, as in ltrain's files
        _slot(config, slot, checker, out)
    trainer = config.get("trainer") or {}
    if not isinstance(trainer, Mapping):
        checker.problem("trainer", f"expected a mapping of Trainer arguments, got {trainer!r}")
    else:
        out["trainer"] = checker.arguments(trainer_class, trainer, "trainer")
    for slot in layout.slots[2:]:
        _slot(config, slot, checker, out)
    if layout.optimizers is not None:
        optimizer, scheduler = layout.optimizers
        if out.get(scheduler) is not None and out.get(optimizer) is None:
            checker.problem(scheduler, f"schedules nothing without an {optimizer}; add one")
    _command_arguments(config, layout, checker, out)
    if checker.problems:
        locate = origins.located if origins is not None else _in_file(source)
        raise ConfigError([locate(key, text) for key, text in checker.problems])
    return Resolved(out, checker.unchecked)


def _seed(config: Mapping[str, Any], layout: Layout, checker: Checker) -> int | bool | None:
    """`seed` (ltrain) and `seed_everything` (LightningCLI) are one setting: an int, `true` to
    pick one when the run starts (and record it), or false/null to leave the generators alone."""
    if "seed" in config and "seed_everything" in config:
        checker.problem("seed_everything", "the same setting as seed; keep one of the two")
    key = "seed_everything" if "seed_everything" in config else "seed"
    seed = config.get(key, layout.seed_default)
    if seed is False or seed is None:
        return None
    if seed is not True and (not isinstance(seed, int) or not 0 <= seed <= MAX_SEED):
        checker.problem(
            key, f"expected an int from 0 to {MAX_SEED}, true (pick one) or null, got {seed!r}"
        )
    return seed


def _slot(config: Mapping[str, Any], slot: Slot, checker: Checker, out: dict[str, Any]) -> None:
    value = config.get(slot.key)
    if slot.fixed is not None:  # the script's class: the key holds its arguments
        if value is not None and (not isinstance(value, Mapping) or "class_path" in value):
            checker.problem(
                slot.key,
                f"the script fixes the class to {slot.fixed.__name__}; "
                "expected a mapping of its arguments",
            )
            return
        arguments = checker.arguments(slot.fixed, value or {}, slot.key, slot.skip, False)
        out[slot.key] = {"class_path": class_path_of(slot.fixed), "init_args": arguments}
    elif value is not None:
        spec = checker.class_spec(value, slot.key, slot.base, role=slot.key, skip=slot.skip)
        out[slot.key] = spec
    elif slot.required:
        checker.problem(slot.key, "missing; expected {class_path: ..., init_args: {...}}")


def _command_arguments(
    config: Mapping[str, Any], layout: Layout, checker: Checker, out: dict[str, Any]
) -> None:
    """`ckpt_path` and the other arguments of the subcommand's Trainer method; only the ones
    given are kept, so ltrain's view of a config that sets none stays as it was."""
    checked: set[str] = set()
    for method in layout.methods():
        names = [*method.signature.parameters, *method.lightning_defaults]
        given = {n: config[n] for n in names if n in config and n not in PASSED | checked}
        arguments = checker.arguments(method, given, "", skip=PASSED)
        out.update({name: arguments[name] for name in given if name in arguments})
        checked |= set(given)


def _trainer_class(trainer: Any) -> Any:
    if isinstance(trainer, str):
        return read_class(trainer) or import_qualified(trainer)
    return trainer


def _parameter_names(target: Any) -> list[str]:
    import inspect

    signature = target.signature if hasattr(target, "signature") else inspect.signature(target)
    return list(signature.parameters)


def load(sources: Sources, layout: Layout = LTRAIN, **options: Any) -> tuple[Resolved, Gathered]:
    """Gather a command's config from its sources (`sources.gather`'s `options`) and resolve it."""
    gathered = gather(sources, **options)
    base_dirs = [os.path.dirname(os.path.abspath(path)) for path in gathered.files]
    resolved = resolve(
        gathered.config,
        base_dir=base_dirs,
        origins=gathered.origins,
        layout=layout,
        modules=gathered.modules,
    )
    return resolved, gathered


# ---------------------------------------------------------------------- LightningCLI's view
def lightning_view(
    resolved: Mapping[str, Any], layout: Layout = LTRAIN, skip_null: bool = False
) -> dict[str, Any]:
    """The resolved config as LightningCLI's `--print_config` writes it, and reads it back.

    Every key is present (`data: null`, each `ckpt_path`-like argument of the subcommand), class
    paths are the ones users import (`torch.optim.Adam`), a fixed class's key holds its arguments
    only, and the keys `link_arguments` sets are left out. ltrain's `name` is kept when set.
    """
    out: dict[str, Any] = {}
    if layout.own_keys and resolved.get("name", "default") != "default":
        out["name"] = resolved["name"]
    seed = resolved.get("seed")
    out["seed_everything"] = False if seed is None else seed
    out["trainer"] = _public(resolved["trainer"])
    for slot in layout.slots:
        spec = _without(resolved.get(slot.key), slot.key, layout.links)
        if spec is not None and slot.fixed is not None:
            spec = spec["init_args"]
        out[slot.key] = _public(spec)
    method = layout.method()
    if method is not None:  # every argument of the subcommand's method
        for name, parameter in method.signature.parameters.items():
            if name not in PASSED:
                out[name] = resolved.get(name, parameter.default)
    else:  # no subcommand: those a config gave
        names = {n for m in layout.methods() for n in m.signature.parameters} - PASSED
        out.update({name: value for name, value in resolved.items() if name in names})
    return without_nulls(out) if skip_null else out


def header_line() -> str:
    """What LightningCLI's dump header says (`lightning.pytorch==2.6.6`), for ltrain."""
    return f"ltrain=={__version__}"


def _public(value: Any) -> Any:
    if isinstance(value, Mapping):
        out = {k: _public(v) for k, v in value.items()}
        if isinstance(value.get("class_path"), str):
            target, problem = find_class(value["class_path"])
            if problem is None:
                out["class_path"] = public_path(target)
        return out
    if isinstance(value, list):
        return [_public(v) for v in value]
    return value


def _without(spec: Any, key: str, links: frozenset[str]) -> Any:
    """A slot's resolved spec without the arguments `link_arguments` sets."""
    prefix = f"{key}.init_args."
    dropped = {link[len(prefix) :] for link in links if link.startswith(prefix)}
    if not dropped or spec is None:
        return spec
    arguments = {k: v for k, v in spec["init_args"].items() if k not in dropped}
    return {**spec, "init_args": arguments}


def without_nulls(value: Any) -> Any:
    """A config without its null values (`--print_config=skip_null`)."""
    if isinstance(value, Mapping):
        return {k: without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [without_nulls(v) for v in value]
    return value


def one_or_many(value: Any) -> list[Any]:
    """A config value that holds one item or a list of them (callbacks, logger), as a list.

    null is no items; a single mapping (`callbacks: {class_path: ...}`) is one.
    """
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


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
def _in_file(source: str | None) -> Any:
    """Without recorded origins every problem is the file's."""

    def located(key: str, text: str) -> str:
        return f"{key}: {text} ({source})" if source else f"{key}: {text}"

    return located


def _make_importable(base_dirs: Sequence[str]) -> None:
    """The configs' folders and the current directory hold users' modules (`my_models.py`)."""
    for folder in (os.getcwd(), *base_dirs):
        if folder and folder not in sys.path:
            sys.path.insert(0, folder)
