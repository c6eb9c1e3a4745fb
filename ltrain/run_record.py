"""`run.json`: what a version folder's run was, and how it ended.

It is written (atomically) when the run starts, with state `running`, and rewritten when it ends:
`finished`, `failed` (with the one-line error) or `interrupted` (Ctrl-C / SIGTERM); a search
relabels a trial it stopped early `pruned`. A run killed
outright (SIGKILL, out of memory) cannot write its end, so the start record also holds the process
id and host: `ltrain runs` shows such a run as `died` once that process is gone. A resumed run
rewrites the record and keeps the earlier ones under `previous`.
"""

from __future__ import annotations

import json
import math
import os
import shlex
import socket
import subprocess
import sys
import time
import warnings
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

RUN_FILE = "run.json"
STATES = ("running", "finished", "failed", "interrupted", "pruned")


class RunRecord:
    """The run.json of one command's version folder; `folder` is None until the run has one."""

    def __init__(self, command: str, command_line: str, extra: Mapping[str, Any] | None = None):
        self.command = command
        self.command_line = command_line
        self.extra = dict(extra or {})
        self.folder: Path | None = None
        self.data: dict[str, Any] = {}
        self._started = time.time()  # also right for a record whose folder appeared mid-run

    def start(self, folder: Path, trainer: Any, checkpoint: Path | None = None) -> None:
        """Write the `running` record; a resumed folder's earlier records move under `previous`.

        Only the global-zero process of a data-parallel run keeps the record.
        """
        import torch

        from ltrain import __version__

        if not trainer.is_global_zero:
            return
        self.folder = Path(folder)
        earlier = read_run(self.folder)
        previous = []
        if earlier is not None:
            previous = [*earlier.pop("previous", []), earlier]
        self.data = {
            "command": self.command,
            "command_line": self.command_line,
            "cwd": os.getcwd(),
            "state": "running",
            "started": _timestamp(self._started),
            "ended": None,
            "duration_s": None,
            "message": None,
            "checkpoint": os.fspath(checkpoint) if checkpoint is not None else None,
            "epochs": None,
            "global_step": None,
            "monitor": None,
            "mode": None,
            "best_model_path": None,
            "best_model_score": None,
            "device": str(trainer.device),
            "precision": trainer.precision,
            "versions": {
                "ltrain": __version__,
                "torch": torch.__version__,
                "python": sys.version.split()[0],
            },
            "git": git_state(os.getcwd()),
            "host": socket.gethostname(),
            "pid": os.getpid(),
            **self.extra,
            "previous": previous,
        }
        self._write()

    def end(self, trainer: Any, error: BaseException | None = None) -> None:
        """Rewrite the record with how the run ended, its position and its best checkpoint."""
        if self.folder is None:
            return
        ended = time.time()
        self.data.update(
            state=end_state(error),
            ended=_timestamp(ended),
            duration_s=round(ended - self._started, 3),
            message=end_message(error),
        )
        if self.command == "fit":
            self.data.update(epochs=trainer.current_epoch, global_step=trainer.global_step)
            from ltrain.callbacks.model_checkpoint import first_model_checkpoint

            callback = first_model_checkpoint(trainer.callbacks)
            if callback is not None:
                score = callback.best_model_score
                self.data.update(
                    monitor=callback.monitor,
                    mode=callback.mode,
                    best_model_path=callback.best_model_path or None,
                    best_model_score=_finite_or_none(score),
                )
        self._write()

    def relabel(self, state: str, message: str) -> None:
        """A run that ended as asked but early on purpose: a search's pruned trial."""
        if self.folder is None:
            return
        self.data.update(state=state, message=message)
        self._write()

    def start_in_version_folder(self, trainer: Any, checkpoint: str | None) -> None:
        """Write the `running` record into the loggers' version folder, once it exists, unless
        the CLI already did (it knows its folder first)."""
        folder = _version_folder(trainer)
        if self.folder is None and folder is not None:
            self.start(Path(folder), trainer, Path(checkpoint) if checkpoint else None)

    def finish(self, trainer: Any, ended_by: BaseException | None) -> None:
        """Say how the run ended (a folder made only during the run gets its record now).

        A record that cannot be written is a warning: it must not replace the run's outcome.
        """
        try:
            if self.folder is None:
                self.start_in_version_folder(trainer, None)
            self.end(trainer, ended_by)
        except OSError as error:
            warnings.warn(f"could not write run.json: {error}", stacklevel=3)

    def discard(self) -> None:
        """The folder was removed (a start that failed with nothing in it): nothing to record."""
        self.folder = None

    def _write(self) -> None:
        from ltrain.files import write_text_atomically

        assert self.folder is not None
        text = json.dumps(self.data, indent=2, allow_nan=False) + "\n"
        write_text_atomically(self.folder / RUN_FILE, text)


def _version_folder(trainer: Any) -> str | None:
    """The version folder the trainer's loggers write into, once it exists."""
    for logger in trainer.loggers:
        if logger.writes_version_folder:
            folder = logger.fixed_log_dir
            return folder if folder is not None and os.path.isdir(folder) else None
    return None


def _finite_or_none(value: Any) -> float | None:
    """JSON has no inf or nan: a diverged score is written as null."""
    if value is None:
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def command_line() -> str:
    """The command as typed (`ltrain fit ...`, `train.py --flag`), for config.yaml and run.json."""
    return " ".join(shlex.quote(a) for a in [Path(sys.argv[0]).name, *sys.argv[1:]])


def end_state(error: BaseException | None) -> str:
    if error is None:
        return "finished"
    return "interrupted" if isinstance(error, KeyboardInterrupt) else "failed"


def end_message(error: BaseException | None) -> str | None:
    """The one line a user needs: the error's first line, or what interrupted the run."""
    if error is None:
        return None
    text = str(error).strip().splitlines()
    if isinstance(error, KeyboardInterrupt):
        return text[0] if text else "KeyboardInterrupt"
    name = type(error).__name__
    return f"{name}: {text[0]}" if text else name


def read_run(folder: str | os.PathLike) -> dict[str, Any] | None:
    """A folder's run.json, or None when it has none (older runs, runs started from Python)."""
    try:
        with open(Path(folder) / RUN_FILE, encoding="utf-8") as handle:
            data = json.load(handle)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def process_alive(record: Mapping[str, Any]) -> bool | None:
    """Whether the process that wrote a `running` record still exists; None when unknowable."""
    pid = record.get("pid")
    if not isinstance(pid, int) or record.get("host") != socket.gethostname():
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process holds that pid now, or still ours under another user
    except OSError:
        return None
    return True


def git_state(directory: str) -> dict[str, Any] | None:
    """The commit checked out in `directory` and whether tracked files differ from it.

    None outside a git work tree or without git: a run never fails for want of version control.
    """
    # optional locks off: `git status` would otherwise refresh the index under a running command
    env = {**os.environ, "GIT_OPTIONAL_LOCKS": "0"}

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(
                ["git", *args],
                cwd=directory,
                env=env,
                capture_output=True,
                text=True,
                timeout=10,
            )
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    if not commit:
        return None
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": commit, "dirty": bool(status) if status is not None else None}


def _timestamp(seconds: float) -> str:
    return datetime.fromtimestamp(seconds).astimezone().isoformat(timespec="seconds")
