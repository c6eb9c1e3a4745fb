"""Tiny CLI runs for the runs table, plot and sweep tests: a config and a callback that fails."""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from boring import digits_config
from click.testing import CliRunner

from ltrain.app.cli import main

TINY: dict[str, Any] = digits_config(
    max_epochs=2,
    limit_train_batches=3,
    callbacks=[
        {
            "class_path": "ModelCheckpoint",
            "init_args": {"monitor": "valid_loss", "save_last": True},
        },
        {"class_path": "raiser.RaiseAt", "init_args": {"step": -1}},
    ],
)

# `trainer.callbacks.1`: after global step `step` (-1: never) raises `error`, or sends SIGINT
RAISER = """
import signal

import ltrain as pl

class RaiseAt(pl.Callback):
    def __init__(self, step: int = -1, error: str = "RuntimeError"):
        self.step, self.error = step, error

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step != self.step:
            return
        if self.error == "SIGINT":
            signal.raise_signal(signal.SIGINT)  # to this thread, not to one of CUDA's
            return
        errors = {"RuntimeError": RuntimeError, "KeyboardInterrupt": KeyboardInterrupt}
        raise errors[self.error](f"boom at step {self.step}")
"""

FAIL_AT_4 = ("--set", "trainer.callbacks.1.step=4")
INTERRUPT_AT_4 = (*FAIL_AT_4, "--set", "trainer.callbacks.1.error=KeyboardInterrupt")


def write_project(folder: Path, **changes: Any) -> Path:
    """tiny.yaml (with `changes` to its trainer section) and raiser.py in `folder`."""
    config = copy.deepcopy(TINY)
    config["trainer"].update(changes)
    (folder / "tiny.yaml").write_text(yaml.safe_dump(config))
    (folder / "raiser.py").write_text(RAISER)
    return folder / "tiny.yaml"


def invoke(*args: str) -> Any:
    """`ltrain ARGS` in this process (torch is imported once for all runs), with sys.argv set as
    the real command would have it, since run.json and config.yaml record the command line."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sys, "argv", ["ltrain", *args])
        return CliRunner().invoke(main, list(args))


def run_json(folder: Path) -> dict[str, Any]:
    return json.loads((folder / "run.json").read_text())
