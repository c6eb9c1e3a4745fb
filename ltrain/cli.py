"""The `ltrain` command line: thin click commands over config.py, runs.py and the Trainer.

Start-up stays fast: torch is imported inside command bodies, never at module level. Every error
that is about the user's input (config, `--set`, `--ckpt`, a Trainer setting) becomes one line on
stderr with exit code 2 and no traceback; an exception from the user's own training code keeps its
traceback, because that is their bug to read.
"""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path
from typing import Any

import click

from ltrain import __version__
from ltrain.config import ConfigError, apply_override, load_yaml, resolve, to_yaml


class CommandError(click.ClickException):
    """A user-input error: printed as `error: <message>` lines, exit code 2."""

    exit_code = 2

    def show(self, file: Any = None) -> None:
        for line in self.message.splitlines():
            click.echo(f"error: {line}", err=True)


class TrainingFailed(CommandError):
    """Training itself went wrong (e.g. the loss diverged): one line, exit code 1."""

    exit_code = 1


SET_HELP = (
    "Override a config value, e.g. --set trainer.max_epochs=3 --set model.lr=3e-4 (repeatable)."
)


def _complete_set_keys(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[Any]:
    """Dotted keys of the config given on the command line, plus the Trainer's arguments."""
    from click.shell_completion import CompletionItem

    from ltrain.config import config_keys

    # while completing, click's resilient parsing leaves the CONFIG argument in ctx.args
    config = ctx.params.get("config") or next(
        (a for a in ctx.args if a.endswith((".yaml", ".yml"))), None
    )
    return [CompletionItem(k + "=") for k in config_keys(config) if k.startswith(incomplete)]


def set_option(function: Any) -> Any:
    return click.option(
        "--set",
        "overrides",
        multiple=True,
        metavar="KEY=VALUE",
        help=SET_HELP,
        shell_complete=_complete_set_keys,
    )(function)


config_argument = click.argument(
    "config", type=click.Path(dir_okay=False, path_type=str), required=False
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="ltrain")
def main() -> None:
    """ltrain: train PyTorch models with Lightning's API from YAML configs.

    \b
    ltrain fit configs/digits.yaml --set trainer.max_epochs=3
    ltrain test --ckpt runs/digits-mlp/version_0
    ltrain predict --ckpt runs/digits-mlp/version_0/checkpoints/last.ckpt
    """


@main.command()
@config_argument
@set_option
@click.option(
    "--resume",
    metavar="PATH|last",
    help="Continue from a checkpoint (or 'last') in its version folder.",
)
def fit(config: str | None, overrides: tuple[str, ...], resume: str | None) -> None:
    """Train the model a CONFIG describes.

    \b
    Example:
      ltrain fit configs/digits.yaml --set trainer.max_epochs=3 --set model.lr=3e-4
    """
    if config is None:
        raise CommandError("fit needs a CONFIG file, e.g. ltrain fit configs/digits.yaml")
    from ltrain.errors import RunInterrupted
    from ltrain.experiment import run_command

    try:
        _guard(run_command, "fit", config, overrides, ckpt=resume)
    except RunInterrupted as stop:
        sets = "".join(f" --set {shlex.quote(o)}" for o in overrides)
        command = f"ltrain fit {shlex.quote(config)}{sets} --resume {shlex.quote(stop.checkpoint)}"
        click.echo(f"Resume with: {command}", err=True)
        sys.exit(128 + stop.signum)


@main.command()
@config_argument
@set_option
@click.option("--ckpt", metavar="PATH", help="Checkpoint file or version folder to load first.")
def validate(config: str | None, overrides: tuple[str, ...], ckpt: str | None) -> None:
    """Run one validation epoch.

    \b
    Example:
      ltrain validate configs/digits.yaml --ckpt runs/digits-mlp/version_0
    """
    if config is None and ckpt is None:
        raise CommandError("validate needs a CONFIG or --ckpt PATH")
    from ltrain.experiment import run_command

    _guard(run_command, "validate", config, overrides, ckpt=ckpt)


@main.command()
@config_argument
@set_option
@click.option(
    "--ckpt", metavar="PATH", help="Checkpoint file or version folder (its best checkpoint)."
)
def test(config: str | None, overrides: tuple[str, ...], ckpt: str | None) -> None:
    """Run the test set through a trained checkpoint.

    Without CONFIG, the config is the one stored in the checkpoint.

    \b
    Example:
      ltrain test --ckpt runs/digits-mlp/version_0
    """
    if ckpt is None:
        raise CommandError("test needs --ckpt PATH (a checkpoint file or a version folder)")
    from ltrain.experiment import run_command

    _guard(run_command, "test", config, overrides, ckpt=ckpt)


@main.command()
@config_argument
@set_option
@click.option(
    "--ckpt", metavar="PATH", help="Checkpoint file or version folder (its best checkpoint)."
)
@click.option(
    "--out", type=click.Path(dir_okay=False), help="Where to write predictions (.csv or .pt)."
)
def predict(
    config: str | None, overrides: tuple[str, ...], ckpt: str | None, out: str | None
) -> None:
    """Write the model's predictions for the predict set.

    \b
    Example:
      ltrain predict --ckpt runs/digits-mlp/version_0/checkpoints/last.ckpt --out preds.csv
    """
    if ckpt is None:
        raise CommandError("predict needs --ckpt PATH (a checkpoint file or a version folder)")
    from ltrain.experiment import run_command

    _guard(run_command, "predict", config, overrides, ckpt=ckpt, out=out)


@main.command(name="lr-find")
@config_argument
@set_option
@click.option(
    "--min-lr", type=float, default=1e-8, show_default=True, help="First rate of the sweep."
)
@click.option(
    "--max-lr", type=float, default=1.0, show_default=True, help="Last rate of the sweep."
)
@click.option(
    "--num-training", type=int, default=100, show_default=True, help="Steps in the sweep."
)
@click.option(
    "--apply", is_flag=True, help="Write CONFIG's copy <name>.lr-find.yaml with the suggested lr."
)
def lr_find(
    config: str | None,
    overrides: tuple[str, ...],
    min_lr: float,
    max_lr: float,
    num_training: int,
    apply: bool,
) -> None:
    """Sweep the learning rate and suggest one (lr_find.csv and lr_find.png in the run folder).

    \b
    Example:
      ltrain lr-find configs/digits.yaml --apply
      ltrain fit configs/digits.lr-find.yaml
    """
    if config is None:
        raise CommandError("lr-find needs a CONFIG file, e.g. ltrain lr-find configs/digits.yaml")
    from ltrain.experiment import run_command

    options = {"min_lr": min_lr, "max_lr": max_lr, "num_training": num_training}
    _guard(run_command, "lr-find", config, overrides, lr_find=options, apply=apply)


@main.command(name="config")
@config_argument
@set_option
def show_config(config: str | None, overrides: tuple[str, ...]) -> None:
    """Print the resolved config (defaults filled, overrides applied) as YAML.

    \b
    Example:
      ltrain config configs/digits.yaml --set trainer.max_epochs=3 > resolved.yaml
    """
    if config is None:
        raise CommandError("config needs a CONFIG file, e.g. ltrain config configs/digits.yaml")

    def show() -> None:
        raw = load_yaml(config)
        for text in overrides:
            apply_override(raw, text)
        resolved = resolve(raw, source=config, base_dir=os.path.dirname(os.path.abspath(config)))
        header = ""
        if resolved.unchecked:
            header = "not checked (passed through **kwargs): " + ", ".join(resolved.unchecked)
        click.echo(to_yaml(resolved.config, header), nl=False)

    _guard(show)


def _guard(function: Any, *args: Any, **kwargs: Any) -> Any:
    """Run a command body, turning input errors into one-line messages (exit code 2)."""
    from ltrain.errors import MisconfigurationException, NonFiniteLossError

    try:
        return function(*args, **kwargs)
    except ConfigError as error:
        raise CommandError(str(error)) from None
    except NonFiniteLossError as error:
        raise TrainingFailed(str(error)) from None
    except MisconfigurationException as error:
        raise CommandError(str(error).strip().splitlines()[0]) from None


def command_line() -> str:
    """The command as typed, for the header of config.yaml."""
    return " ".join(shlex.quote(a) for a in [Path(sys.argv[0]).name, *sys.argv[1:]])
