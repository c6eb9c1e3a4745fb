"""`LightningCLI` for ltrain: a `main.py` written for Lightning's runs with its import changed.

    from ltrain.cli import LightningCLI      # was: from lightning.pytorch.cli import LightningCLI

    class MyCLI(LightningCLI):
        def add_arguments_to_parser(self, parser):
            parser.link_arguments("data.num_classes", "model.num_classes")

    MyCLI(MyModel, MyDataModule)             # python main.py fit --config config.yaml ...

The class keeps Lightning's arguments, hooks and attributes (`cli.model`, `cli.datamodule`,
`cli.trainer`, `cli.config`), and its command line is LightningCLI's: a subcommand, `--config`
files, dotted flags, `--print_config`, environment variables with `default_env`. Underneath it is
the `ltrain` command's machinery, not jsonargparse: sources are gathered by app/sources.py, checked
by app/config.py against real signatures, every problem at once, one line each, exit code 2.

This module is user-facing API that needs the app, so it counts as an app entry module, like
`ltrain.__main__`: it may import `ltrain.app`, and the library never imports it
(tests/test_imports.py holds both rules).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any, Literal

import torch

from ltrain.app.checking import check_value
from ltrain.app.config import (
    COMMANDS,
    PASSED,
    Layout,
    Slot,
    header_line,
    instantiate,
    lightning_view,
    load,
    one_or_many,
    to_yaml,
)
from ltrain.app.errors import ConfigError
from ltrain.app.lightning_parser import (
    LightningArgumentParser,
    Namespace,
    SaveConfigCallback,
    attribute,
    lookup,
    store,
)
from ltrain.app.optimizers import attach_optimizers
from ltrain.app.optimizers import configure_optimizers as default_configure_optimizers
from ltrain.app.sources import Environment, parse_arguments
from ltrain.data.datamodule import DataModule
from ltrain.errors import MisconfigurationException
from ltrain.module import Module
from ltrain.trainer import Trainer

ArgsType = Sequence[str] | Mapping[str, Any] | None


class ReduceLROnPlateau(torch.optim.lr_scheduler.ReduceLROnPlateau):
    """torch's ReduceLROnPlateau with the metric it watches, which `configure_optimizers` returns.

    torch's arguments are spelled out so that a printed or saved config lists them with their
    defaults, as LightningCLI's does.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        monitor: str,
        mode: Literal["min", "max"] = "min",
        factor: float = 0.1,
        patience: int = 10,
        threshold: float = 1e-4,
        threshold_mode: Literal["rel", "abs"] = "rel",
        cooldown: int = 0,
        min_lr: float | list[float] = 0.0,
        eps: float = 1e-8,
    ):
        super().__init__(
            optimizer,
            mode=mode,
            factor=factor,
            patience=patience,
            threshold=threshold,
            threshold_mode=threshold_mode,
            cooldown=cooldown,
            min_lr=min_lr,
            eps=eps,
        )
        self.monitor = monitor


class LightningCLI:
    """Lightning's LightningCLI: parse the command line and configs, build the model, data module
    and Trainer, and run the subcommand, with Lightning's arguments and hooks."""

    def __init__(
        self,
        model_class: Any = None,
        datamodule_class: Any = None,
        save_config_callback: type[SaveConfigCallback] | None = SaveConfigCallback,
        save_config_kwargs: dict[str, Any] | None = None,
        trainer_class: Any = Trainer,
        trainer_defaults: dict[str, Any] | None = None,
        seed_everything_default: bool | int = True,
        parser_kwargs: dict[str, Any] | None = None,
        parser_class: type[LightningArgumentParser] = LightningArgumentParser,
        subclass_mode_model: bool = False,
        subclass_mode_data: bool = False,
        args: ArgsType = None,
        run: bool = True,
        auto_configure_optimizers: bool = True,
        load_from_checkpoint_support: bool = True,
    ) -> None:
        self.save_config_callback = save_config_callback
        self.save_config_kwargs = save_config_kwargs or {}
        self.trainer_class = trainer_class
        self.trainer_defaults = trainer_defaults or {}
        self.seed_everything_default = seed_everything_default
        self.parser_kwargs = parser_kwargs or {}
        self.parser_class = parser_class
        self.auto_configure_optimizers = auto_configure_optimizers
        self.model_class = model_class
        self.datamodule_class = datamodule_class
        self.subclass_mode_model = model_class is None or subclass_mode_model
        self.subclass_mode_data = datamodule_class is None or subclass_mode_data
        try:
            self.subcommand, words, given = _split(args, run)
            self.parser = self._make_parser()
            self.layout = self._layout()
            self.parse_arguments(self.parser, words, given)
        except ConfigError as error:
            _exit(error)
        self._set_seed()
        self.before_instantiate_classes()
        try:
            self.instantiate_classes()
        except (ConfigError, MisconfigurationException) as error:
            _exit(error)
        self.after_instantiate_classes()
        if self.subcommand is not None:
            self._run_subcommand(self.subcommand)

    # ------------------------------------------------------------------ hooks users override
    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        """Implement to add class arguments, link arguments or set defaults."""

    def before_instantiate_classes(self) -> None:
        """Implement to run code before the classes are built."""

    def after_instantiate_classes(self) -> None:
        """Implement to run code after the classes are built."""

    @staticmethod
    def subcommands() -> dict[str, set[str]]:
        """The subcommands and the arguments of their Trainer methods the CLI passes itself."""
        return {command: set(PASSED) for command in COMMANDS}

    @staticmethod
    def configure_optimizers(
        lightning_module: Any, optimizer: Any, lr_scheduler: Any = None
    ) -> Any:
        """Override to change what the config's optimizer and scheduler make the module return."""
        return default_configure_optimizers(lightning_module, optimizer, lr_scheduler)

    # ------------------------------------------------------------------ parsing
    def init_parser(self, **kwargs: Any) -> LightningArgumentParser:
        return self.parser_class(**kwargs)

    def parse_arguments(
        self, parser: LightningArgumentParser, words: Sequence[str], given: Mapping[str, Any] | None
    ) -> None:
        """Parse the command line (or the `args` mapping) into `self.config`, checking it all."""
        if "-h" in words or "--help" in words:
            print(self._help())
            sys.exit(0)
        sources = parse_arguments(words, positional=False)
        defaults = {f"trainer.{k}": v for k, v in self.trainer_defaults.items() if k != "callbacks"}
        defaults.update(parser.defaults)
        environment = None
        if parser.default_env:  # jsonargparse's names: PL_FIT__TRAINER__MAX_EPOCHS, PL_MODEL
            command = f"{self.subcommand.upper()}__" if self.subcommand else ""
            prefix = f"{parser.env_prefix}_{command}"
            environment = Environment(prefix, dict(os.environ), self.layout.keys())
        options: dict[str, Any] = {
            "defaults": defaults,
            "default_files": parser.default_config_files,
            "environment": environment,
            "base": (given, "args") if given is not None else None,
        }
        self.resolved = load(sources, self.layout, **options)[0].config
        self._link_on_parse()
        if sources.print_config is not None:  # as given: LightningCLI prints before ckpt_path
            shown = lightning_view(self.resolved, self.layout, "skip_null" in sources.print_config)
            print(to_yaml(shown, header_line()), end="")
            sys.exit(0)
        ckpt_path = self.resolved.get("ckpt_path")
        hparams = self._checkpoint_hyperparameters(ckpt_path)
        if hparams:  # the model the checkpoint was trained as, over everything else
            after = ({"model": hparams}, f"ckpt_path {ckpt_path}")
            self.resolved = load(sources, self.layout, after=after, **options)[0].config
            self._link_on_parse()
        self.config = self._nested(lightning_view(self.resolved, self.layout))

    def _checkpoint_hyperparameters(self, ckpt_path: Any) -> dict[str, Any]:
        """A checkpoint's `hyper_parameters`, as LightningCLI reads them into the model's config
        when a subcommand gets `ckpt_path` (less the arguments links fill)."""
        if not self.subcommand or not isinstance(ckpt_path, str) or not os.path.isfile(ckpt_path):
            return {}
        from ltrain.checkpoint import UnsafeCheckpointError, load_checkpoint

        try:
            checkpoint = load_checkpoint(ckpt_path, map_location="cpu")
        except (UnsafeCheckpointError, OSError) as error:
            raise ConfigError(f"ckpt_path: {ckpt_path}: {error}") from None
        linked = {self._internal(link.target) for link in self.parser.links}
        hparams = dict(checkpoint.get("hyper_parameters") or {})
        return {k: v for k, v in hparams.items() if f"model.init_args.{k}" not in linked}

    def _make_parser(self) -> LightningArgumentParser:
        main = {k: v for k, v in self.parser_kwargs.items() if k not in COMMANDS}
        nested = self.parser_kwargs.get(self.subcommand, {}) if self.subcommand else {}
        parser = self.init_parser(**{**main, **nested})
        model_base = self.model_class or Module
        data_base = self.datamodule_class or DataModule
        parser.slots += [
            Slot("model", model_base, True, None if self.subclass_mode_model else model_base),
            Slot(
                "data",
                data_base,
                self.datamodule_class is not None,
                None if self.subclass_mode_data else data_base,
            ),
        ]
        self.add_arguments_to_parser(parser)
        if self.auto_configure_optimizers:
            if not parser._optimizers:
                parser.add_optimizer_args()
            if not parser._lr_schedulers:
                parser.add_lr_scheduler_args()
        return parser

    def _layout(self) -> Layout:
        automatic = [k for k, (_, link) in self.parser._optimizers.items() if link == "AUTOMATIC"]
        schedulers = [
            k for k, (_, link) in self.parser._lr_schedulers.items() if link == "AUTOMATIC"
        ]
        pair = (automatic[0], schedulers[0] if schedulers else "") if len(automatic) == 1 else None
        layout = Layout(
            slots=tuple(self.parser.slots),
            own_keys=False,
            seed_default=self.seed_everything_default,
            trainer="ltrain.trainer.Trainer"
            if self.trainer_class is Trainer
            else self.trainer_class,
            optimizers=pair if self.auto_configure_optimizers else None,
        )
        links = frozenset(self._internal(link.target) for link in self.parser.links)
        return replace(layout.for_command(self.subcommand), links=links)

    def _internal(self, key: str) -> str:
        """A key as the resolved config holds it: a class's arguments are under `init_args`."""
        head, _, rest = key.partition(".")
        slots = {slot.key for slot in self.parser.slots}
        if head in slots and rest and not rest.startswith(("init_args.", "class_path")):
            return f"{head}.init_args.{rest}"
        return key

    def _link_on_parse(self) -> None:
        problems = []
        for link in self.parser.links:
            if link.apply_on != "parse":
                continue
            values = [lookup(self.resolved, self._internal(source)) for source in link.sources]
            value = link.compute_fn(*values) if link.compute_fn else values[0]
            target = self._internal(link.target)
            value, found = self._checked(target, value)
            problems += [
                f"{problem} (link_arguments from {', '.join(link.sources)})" for problem in found
            ]
            store(self.resolved, target, value)
        if problems:
            raise ConfigError(problems)

    def _checked(self, target: str, value: Any) -> tuple[Any, list[str]]:
        """A linked value checked against the hint of the argument it fills."""
        import inspect
        import typing

        from ltrain.app.signatures import import_qualified

        head, _, name = target.rpartition(".init_args.")
        spec = lookup(self.resolved, head) if name else None
        if not isinstance(spec, Mapping):
            return value, []
        cls = import_qualified(spec["class_path"])
        if name not in inspect.signature(cls).parameters:
            return value, [f"{target}: no such argument of {cls.__name__}"]
        try:
            hint = typing.get_type_hints(cls.__init__).get(name, Any)
        except Exception:
            hint = Any
        return check_value(value, hint, target)

    # ------------------------------------------------------------------ building
    def _set_seed(self) -> None:
        from ltrain.seed import seed_everything

        seed = self.resolved.get("seed")
        if seed is None:
            return
        seed = seed_everything(None if seed is True else seed, workers=True)
        self.resolved["seed"] = seed
        (self.config[self.subcommand] if self.subcommand else self.config)["seed_everything"] = seed

    def instantiate_classes(self) -> None:
        """Build the data module, the model (links first) and the Trainer."""
        # optimizers and schedulers stay specs: they are built from the model's parameters
        specs_only = {*self.parser._optimizers, *self.parser._lr_schedulers}
        built: dict[str, Any] = {}
        for slot in self._in_link_order():
            spec = self.resolved.get(slot.key)
            if spec is None or slot.key in specs_only:
                built[slot.key] = spec
            else:
                built[slot.key] = self._build(slot.key, spec, built)
        self.config_init = self._nested({**lightning_view(self.resolved, self.layout), **built})
        self.datamodule = built.get("data")
        self.model = built["model"]
        self._add_configure_optimizers_method_to_model(self.subcommand)
        self.trainer = self.instantiate_trainer()

    def instantiate_trainer(self, **kwargs: Any) -> Any:
        """The Trainer from the config, with the callback keys' objects, the defaults' callbacks
        and the config-saving callback added to its callbacks."""
        config = dict(self.resolved["trainer"])
        config["callbacks"] = one_or_many(instantiate(config.get("callbacks")))
        config["logger"] = instantiate(config.get("logger"))
        config.update(kwargs)
        config["callbacks"] += [
            self._get(self.config_init, key) for key in self.parser.callback_keys
        ]
        config["callbacks"] += one_or_many(self.trainer_defaults.get("callbacks"))
        if self.save_config_callback and not config.get("fast_dev_run", False):
            saved = self.config[self.subcommand] if self.subcommand else self.config
            config["callbacks"].append(
                self.save_config_callback(self.parser, saved, **self.save_config_kwargs)
            )
        return self.trainer_class(**config)

    def _build(self, key: str, spec: Mapping[str, Any], built: Mapping[str, Any]) -> Any:
        from ltrain.app.signatures import import_qualified

        arguments = {k: instantiate(v) for k, v in (spec.get("init_args") or {}).items()}
        for link in self.parser.links:
            if link.apply_on == "instantiate" and self._internal(link.target).startswith(
                f"{key}.init_args."
            ):
                values = [attribute(built, source) for source in link.sources]
                value = link.compute_fn(*values) if link.compute_fn else values[0]
                arguments[self._internal(link.target).rpartition(".")[2]] = value
        try:
            return import_qualified(spec["class_path"])(**arguments)
        except MisconfigurationException as error:
            raise MisconfigurationException(f"{key}: {error}") from None

    def _in_link_order(self) -> list[Slot]:
        """Slots whose objects feed an instantiate link come before the slots they feed."""
        needs = {
            self._internal(link.target).partition(".")[0]: {
                s.partition(".")[0] for s in link.sources
            }
            for link in self.parser.links
            if link.apply_on == "instantiate"
        }
        ordered: list[Slot] = []
        pending = list(self.parser.slots)
        while pending:
            ready = [s for s in pending if not needs.get(s.key, set()) - {o.key for o in ordered}]
            ordered += ready or pending  # a cycle: keep the declared order
            pending = [s for s in pending if s not in ordered]
        return ordered

    def _add_configure_optimizers_method_to_model(self, subcommand: str | None) -> None:
        """The config's automatic optimizer and scheduler become the model's configure_optimizers."""
        pair = self.layout.optimizers
        if pair is None:
            return
        optimizer = self.resolved.get(pair[0])
        if optimizer is None:
            return
        scheduler = self.resolved.get(pair[1]) if pair[1] else None
        owner = type(self).__name__
        attach_optimizers(self.model, optimizer, scheduler, self.configure_optimizers, owner)

    # ------------------------------------------------------------------ running
    def _run_subcommand(self, subcommand: str) -> None:
        before = getattr(self, f"before_{subcommand}", None)
        if callable(before):
            before()
        function = getattr(self, subcommand, getattr(self.trainer, subcommand))
        function(**self._prepare_subcommand_kwargs(subcommand))
        after = getattr(self, f"after_{subcommand}", None)
        if callable(after):
            after()

    def _prepare_subcommand_kwargs(self, subcommand: str) -> dict[str, Any]:
        method = self.layout.method()
        kwargs = {
            name: self.config[subcommand][name]
            for name in method.signature.parameters
            if name not in self.subcommands()[subcommand]
        }
        kwargs["model"] = self.model
        if self.datamodule is not None:
            kwargs["datamodule"] = self.datamodule
        return kwargs

    def _get(self, config: Mapping[str, Any], key: str, default: Any = None) -> Any:
        """A config value, inside the subcommand's part when there is one."""
        return config.get(str(self.subcommand), config).get(key, default)

    def _nested(self, config: Mapping[str, Any]) -> Namespace:
        """As LightningCLI keeps it: under the subcommand's name when there is one."""
        if self.subcommand is None:
            return Namespace(config)
        return Namespace({self.subcommand: config, "subcommand": self.subcommand})

    def _help(self) -> str:
        program = os.path.basename(sys.argv[0])
        command = f" {self.subcommand}" if self.subcommand else ""
        return (
            f"usage: {program}{command} [--config FILE]... [--KEY=VALUE]... "
            "[--print_config[=skip_null]]\n\n"
            f"{self.parser.description or 'ltrain LightningCLI'}\n\n"
            f"keys: {', '.join(self.layout.keys())}\n"
            "A class's arguments are dotted keys (--trainer.max_epochs=3, --model.lr 1e-3);\n"
            "--KEY+=VALUE appends to a list (--trainer.callbacks+=EarlyStopping)."
        )


# ---------------------------------------------------------------------- helpers
def _split(args: ArgsType, run: bool) -> tuple[str | None, list[str], Mapping[str, Any] | None]:
    """(subcommand, the words after it, a config mapping given as `args`)."""
    if isinstance(args, Mapping):
        given = dict(args)
        command = given.pop("subcommand", None) if run else None
        if run:
            command = command or next((c for c in COMMANDS if c in given), None)
            if command is None:
                raise ConfigError(f"args: expected a subcommand key, one of {', '.join(COMMANDS)}")
            given = dict(given.get(command) or {})
        return command, [], given
    words = list(sys.argv[1:] if args is None else args)
    if not run:
        return None, words, None
    if words and words[0] in ("-h", "--help"):
        print(f"usage: {os.path.basename(sys.argv[0])} {{{','.join(COMMANDS)}}} --help")
        sys.exit(0)
    if not words:
        raise ConfigError(f"expected a subcommand: {', '.join(COMMANDS)}")
    if words[0] not in COMMANDS:
        raise ConfigError(f"{words[0]}: expected a subcommand first, one of {', '.join(COMMANDS)}")
    return words[0], words[1:], None


def _exit(error: Exception) -> None:
    """An input error: one line per problem on stderr, exit code 2, as the `ltrain` command."""
    lines = str(error).strip().splitlines()
    if not isinstance(error, ConfigError):
        lines = lines[:1]  # a Trainer argument refused: its first line says which and why
    for line in lines:
        print(f"error: {line}", file=sys.stderr)
    sys.exit(2)


__all__ = [
    "LightningArgumentParser",
    "LightningCLI",
    "Namespace",
    "ReduceLROnPlateau",
    "SaveConfigCallback",
]
