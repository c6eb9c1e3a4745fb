"""What a LightningCLI script's `add_arguments_to_parser` shapes: the parser, links, the config
saving callback, and the Namespace its config is read through.

`LightningArgumentParser` keeps Lightning's method names, but nothing here parses: each method
records a top-level key (a `config.Slot`), a link or a default, and `ltrain.cli.LightningCLI` turns
them into a `config.Layout` that the app's sources and checker use, as the `ltrain` command does.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ltrain.app.config import LR_SCHEDULER, OPTIMIZER, Slot, header_line, to_yaml, without_nulls
from ltrain.app.errors import ConfigError
from ltrain.app.names import LR_SCHEDULER_BASES
from ltrain.app.signatures import import_qualified
from ltrain.callbacks import Callback
from ltrain.data.datamodule import DataModule
from ltrain.errors import MisconfigurationException
from ltrain.module import Module
from ltrain.trainer import Trainer


class Namespace(dict):
    """A parsed config: `config.trainer.max_epochs`, `config["trainer"]["max_epochs"]` or
    `config["trainer.max_epochs"]`, as jsonargparse's Namespace is read."""

    def __init__(self, values: Mapping[str, Any] | None = None) -> None:
        super().__init__({k: _namespaced(v) for k, v in (values or {}).items()})

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    def __getitem__(self, key: str) -> Any:
        if key in self.keys() or "." not in key:
            return super().__getitem__(key)
        head, _, rest = key.partition(".")
        return super().__getitem__(head)[rest]

    def get(self, key: str, default: Any = None) -> Any:
        try:
            return self[key]
        except (KeyError, TypeError):
            return default

    def as_dict(self) -> dict[str, Any]:
        return {k: v.as_dict() if isinstance(v, Namespace) else v for k, v in self.items()}


def _namespaced(value: Any) -> Any:
    return (
        Namespace(value)
        if isinstance(value, Mapping) and not isinstance(value, Namespace)
        else value
    )


@dataclass(frozen=True)
class Link:
    sources: tuple[str, ...]
    target: str
    compute_fn: Callable[..., Any] | None
    apply_on: str


class LightningArgumentParser:
    """What `add_arguments_to_parser` receives: Lightning's methods for shaping the config.

    Class arguments (`add_lightning_class_args`, `add_optimizer_args`, `add_lr_scheduler_args`)
    become top-level keys, `link_arguments` fills one key from others, `set_defaults` gives
    defaults by dotted key.
    """

    def __init__(
        self, *args: Any, env_prefix: str = "PL", default_env: bool = False, **kwargs: Any
    ):
        unknown = sorted(set(kwargs) - {"description", "default_config_files", "parser_mode"})
        if args or unknown:
            raise ValueError(f"LightningArgumentParser: ltrain does not support {unknown or args}")
        if kwargs.get("parser_mode", "yaml") != "yaml":
            raise ValueError("LightningArgumentParser: ltrain reads YAML configs only")
        self.description = kwargs.get("description", "")
        self.env_prefix = env_prefix
        self.default_env = env_flag(default_env)
        self.default_config_files = list(kwargs.get("default_config_files") or [])
        self.slots: list[Slot] = []
        self.callback_keys: list[str] = []
        self.links: list[Link] = []
        self.defaults: dict[str, Any] = {}
        self._optimizers: dict[str, tuple[Any, str]] = {}
        self._lr_schedulers: dict[str, tuple[Any, str]] = {}

    def add_lightning_class_args(
        self,
        lightning_class: Any,
        nested_key: str,
        subclass_mode: bool = False,
        required: bool = True,
    ) -> list[str]:
        """A class's arguments under `nested_key`; a Callback's object joins the Trainer's."""
        if not isinstance(lightning_class, type) or not issubclass(
            lightning_class, (Trainer, Module, DataModule, Callback)
        ):
            raise MisconfigurationException(
                f"Cannot add arguments from: {lightning_class}. You should provide a subclass of: "
                "Trainer, LightningModule, LightningDataModule, or Callback."
            )
        if issubclass(lightning_class, Callback):
            self.callback_keys.append(nested_key)
        fixed = None if subclass_mode else lightning_class
        self.slots.append(Slot(nested_key, lightning_class, required, fixed))
        return []

    def add_optimizer_args(
        self,
        optimizer_class: Any = None,
        nested_key: str = "optimizer",
        link_to: str = "AUTOMATIC",
    ) -> None:
        """An optimizer under `nested_key`: a class to fix, or a tuple of classes to choose from
        (by default any `torch.optim.Optimizer`)."""
        import torch

        optimizer_class = optimizer_class or (torch.optim.Optimizer,)
        self._add_class_slot(OPTIMIZER, optimizer_class, nested_key)
        self._optimizers[nested_key] = (optimizer_class, link_to)
        if link_to != "AUTOMATIC":
            self.link_arguments(nested_key, link_to)

    def add_lr_scheduler_args(
        self,
        lr_scheduler_class: Any = None,
        nested_key: str = "lr_scheduler",
        link_to: str = "AUTOMATIC",
    ) -> None:
        """A learning-rate scheduler under `nested_key`, as `add_optimizer_args` (by default any
        `LRScheduler`, or `ltrain.cli.ReduceLROnPlateau`, which knows the metric it watches)."""
        default = tuple(import_qualified(base) for base in LR_SCHEDULER_BASES)
        lr_scheduler_class = lr_scheduler_class or default
        self._add_class_slot(LR_SCHEDULER, lr_scheduler_class, nested_key)
        self._lr_schedulers[nested_key] = (lr_scheduler_class, link_to)
        if link_to != "AUTOMATIC":
            self.link_arguments(nested_key, link_to)

    def link_arguments(
        self,
        source: str | tuple[str, ...],
        target: str,
        compute_fn: Callable[..., Any] | None = None,
        apply_on: str = "parse",
    ) -> None:
        """Fill `target` from `source` (keys; with apply_on="instantiate", attributes of the
        built object), through `compute_fn` when given. The config may not set `target`."""
        if apply_on not in ("parse", "instantiate"):
            raise ValueError(
                f"link_arguments: apply_on must be 'parse' or 'instantiate', got {apply_on!r}"
            )
        sources = (source,) if isinstance(source, str) else tuple(source)
        self.links.append(Link(sources, target, compute_fn, apply_on))

    def set_defaults(self, defaults: Mapping[str, Any] | None = None, **kwargs: Any) -> None:
        """Defaults by dotted key (`{"early_stopping.patience": 5}`), below every config source."""
        self.defaults.update({**(defaults or {}), **kwargs})

    def dump(self, config: Mapping[str, Any], skip_none: bool = True, **kwargs: Any) -> str:
        """A config as YAML text (`SaveConfigCallback.save_config` overrides use it)."""
        plain = config.as_dict() if isinstance(config, Namespace) else dict(config)
        return to_yaml(without_nulls(plain) if skip_none else plain, header_line())

    def save(
        self, config: Mapping[str, Any], path: str, skip_none: bool = True, **kwargs: Any
    ) -> None:
        from ltrain.files import write_text_atomically

        write_text_atomically(path, self.dump(config, skip_none=skip_none))

    def _add_class_slot(self, template: Slot, classes: Any, nested_key: str) -> None:
        fixed = None if isinstance(classes, tuple) else classes
        base = classes if isinstance(classes, tuple) else (classes,)
        self.slots.append(Slot(nested_key, base, fixed=fixed, skip=template.skip))


class SaveConfigCallback(Callback):
    """Writes the run's config (LightningCLI's form) to `config.yaml` in the log dir at setup.

    An existing file is an error unless `overwrite`, so one run's config never replaces another's.
    """

    def __init__(
        self,
        parser: LightningArgumentParser,
        config: Mapping[str, Any],
        config_filename: str = "config.yaml",
        overwrite: bool = False,
        multifile: bool = False,
        save_to_log_dir: bool = True,
    ) -> None:
        self.parser = parser
        self.config = config
        self.config_filename = config_filename
        self.overwrite = overwrite
        self.save_to_log_dir = save_to_log_dir
        self.already_saved = False
        if not save_to_log_dir and type(self).save_config is SaveConfigCallback.save_config:
            raise ValueError(
                "`save_to_log_dir=False` only makes sense when subclassing SaveConfigCallback to "
                "implement `save_config`."
            )

    def setup(self, trainer: Any, pl_module: Any, stage: str) -> None:
        if self.already_saved or not trainer.is_global_zero:
            return
        if self.save_to_log_dir:
            path = os.path.join(trainer.log_dir, self.config_filename)
            if os.path.isfile(path) and not self.overwrite:
                raise RuntimeError(
                    f"SaveConfigCallback expected {path} to NOT exist. Aborting to avoid overwriting "
                    "results of a previous run; set save_config_kwargs={'overwrite': True} to allow it."
                )
            os.makedirs(trainer.log_dir, exist_ok=True)
            self.parser.save(self.config, path, skip_none=False)
        self.save_config(trainer, pl_module, stage)
        self.already_saved = True

    def save_config(self, trainer: Any, pl_module: Any, stage: str) -> None:
        """Override to save the config somewhere else too (runs on rank zero only)."""


# ---------------------------------------------------------------------- helpers
def lookup(config: Mapping[str, Any], key: str) -> Any:
    node: Any = config
    for part in key.split("."):
        if not isinstance(node, Mapping) or part not in node:
            raise ConfigError(f"{key}: no such key to link from")
        node = node[part]
    return node


def store(config: dict[str, Any], key: str, value: Any) -> None:
    *parents, last = key.split(".")
    node = config
    for part in parents:
        node = node.setdefault(part, {})
    node[last] = value


def attribute(built: Mapping[str, Any], source: str) -> Any:
    head, _, rest = source.partition(".")
    value = built[head]
    for part in rest.split(".") if rest else ():
        value = getattr(value, part)
    return value


def env_flag(default_env: bool) -> bool:
    """jsonargparse's rule: JSONARGPARSE_DEFAULT_ENV=true/false wins over the argument."""
    forced = os.environ.get("JSONARGPARSE_DEFAULT_ENV", "").lower()
    return forced == "true" if forced in ("true", "false") else default_env
