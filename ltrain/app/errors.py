"""How a command fails: the app's errors, the guard that makes each one a line and an exit code.

Every error about the user's input (config, `--set`, `--ckpt`, a Trainer setting) becomes one line
on stderr with exit code 2 and no traceback; an exception from the user's own training code keeps
its traceback, because that is their bug to read. The commands (cli.py) and the sweep (sweeps.py)
both end runs through `guard`, so the two cannot drift apart, and neither imports the other.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import click

from ltrain.errors import (
    MisconfigurationException,
    NonFiniteLossError,
    RunInterrupted,
    WorkersFailed,
)

if TYPE_CHECKING:
    from ltrain.app.sources import Sources


class ConfigError(Exception):
    """One or more problems in a command's input; each line names the key, option or file and the fix."""

    def __init__(self, problems: list[str] | str) -> None:
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("\n".join(self.problems))


class CommandError(click.ClickException):
    """A user-input error: printed as `error: <message>` lines, exit code 2."""

    exit_code = 2

    def show(self, file: Any = None) -> None:
        for line in self.message.splitlines():
            click.echo(f"error: {line}", err=True)


class TrainingFailed(CommandError):
    """Training itself went wrong (e.g. the loss diverged): one line, exit code 1."""

    exit_code = 1


def guard(function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run a command body, turning input errors into one-line messages (exit code 2)."""
    try:
        return function(*args, **kwargs)
    except WorkersFailed as failed:  # the launcher and the rank have said what happened
        raise click.exceptions.Exit(failed.code) from None
    except ConfigError as error:
        raise CommandError(str(error)) from None
    except NonFiniteLossError as error:
        raise TrainingFailed(str(error)) from None
    except MisconfigurationException as error:
        raise CommandError(str(error).strip().splitlines()[0]) from None


def resume_command(sources: Sources, stop: RunInterrupted) -> str:
    """The command that continues a fit stopped by a signal."""
    return f"{fit_command(sources)} --resume {shlex.quote(stop.checkpoint)}"


def fit_command(sources: Sources) -> str:
    """`ltrain fit` with a config's sources, as a shell line."""
    return " ".join(["ltrain fit", *(shlex.quote(word) for word in sources.words())])
