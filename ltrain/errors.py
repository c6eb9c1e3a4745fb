"""Errors ltrain raises for inputs it refuses, so the CLI turns every one into a single line.

`MisconfigurationException` keeps Lightning's name, so code that catches it keeps working; it is a
ValueError, since every one of them is a value ltrain cannot run with.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from typing import Any


class MisconfigurationException(ValueError):
    """A setting, hook or return value ltrain cannot run with; the message says what would be valid."""


class MissingDataError(MisconfigurationException, FileNotFoundError):
    """Data files are not where a data module looks; the message says where to put them."""


class NonFiniteLossError(RuntimeError):
    """The training loss became nan or inf; the message names the step and the batch."""


class RunInterrupted(KeyboardInterrupt, SystemExit):
    """Fit stopped on SIGINT/SIGTERM after saving `checkpoint`.

    A KeyboardInterrupt to the code around fit (finally blocks run, `except KeyboardInterrupt`
    catches it); uncaught, it ends the process as the signal does, with status 128 + `signum`
    (130, 143) and no traceback, because it is also a SystemExit with that code.
    """

    def __init__(self, signum: int, checkpoint: str) -> None:
        super().__init__(f"{signal.Signals(signum).name}: saved {checkpoint}")
        self.code = 128 + signum
        self.signum = signum
        self.checkpoint = checkpoint


class TunerExit(Exception):
    """A Tuner's finder is done: the trainer's run ends there, as a finished one."""


class WorkersFailed(RuntimeError):
    """A data-parallel rank started by ltrain's launcher failed; exit with its `code`.

    The launcher has already said which rank and code, and the rank printed its own error.
    """

    def __init__(self, code: int) -> None:
        super().__init__(f"a worker exited with code {code}")
        self.code = code


def lightning_names_not_here(module: str, names: tuple[str, ...]) -> Callable[[str], Any]:
    """A module `__getattr__` for Lightning's names that `module` does not have yet: using one
    (`from ltrain.callbacks import RichProgressBar`) raises an ImportError that names it, instead
    of Python's bare "cannot import name"."""

    def __getattr__(name: str) -> Any:
        if name in names:
            raise ImportError(
                f"{module}.{name}: Lightning has {name}, ltrain does not yet (see the README's "
                "'Lightning API coverage')",
                name=module,
            )
        raise AttributeError(f"module {module!r} has no attribute {name!r}")

    return __getattr__
