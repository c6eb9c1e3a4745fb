"""Checks of the Trainer's arguments, the loggers `logger` stands for, the torch settings `deterministic` sets.

Every argument is checked when the Trainer is built, so a typo stops the run before any data is
loaded or any folder is made; each message names the argument and what it accepts.
`deterministic` and `benchmark` change process-wide torch settings, so a run sets them and puts
the previous ones back when it ends (a second Trainer in the process starts clean).
"""

from __future__ import annotations

import os
from datetime import timedelta
from typing import Any

import torch

from ltrain.callbacks.timer import parse_duration
from ltrain.console import info
from ltrain.errors import MisconfigurationException
from ltrain.loggers.base import Logger, package_installed, share_version_folder
from ltrain.loggers.csv_logs import CSVLogger
from ltrain.loggers.tensorboard import TensorBoardLogger


def make_loggers(logger: Any, default_root_dir: str, fast_dev_run: bool) -> list[Logger]:
    """The loggers `logger` stands for; the default (True/None) keeps two promises at once.

    Lightning's default is a TensorBoardLogger when tensorboard is installed, so code written for
    it calls `self.logger.experiment.add_image(...)`; ltrain's is that every run writes
    `lightning_logs/version_N/metrics.csv`. Both are kept: `trainer.logger` is the TensorBoard
    logger and a CSVLogger beside it shares its version folder. Without tensorboard the default
    is the CSVLogger alone, as in Lightning.
    """
    if fast_dev_run or logger is False:
        return []
    if logger is None or logger is True:
        loggers: list[Logger] = [CSVLogger(save_dir=default_root_dir)]
        if package_installed("tensorboard"):
            loggers.insert(0, TensorBoardLogger(save_dir=default_root_dir))
            share_version_folder(loggers)
        return loggers
    loggers = list(logger) if isinstance(logger, (list, tuple)) else [logger]
    for item in loggers:
        if not isinstance(item, Logger):
            raise MisconfigurationException(
                f"logger: {type(item).__name__} is not an ltrain Logger (or use True/False)"
            )
    share_version_folder(loggers)  # CSV + TensorBoard under one save_dir/name: one version_N
    return loggers


def check_int(name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise MisconfigurationException(f"{name}={value!r}: expected an int >= {minimum}")


def check_limit(name: str, value: Any) -> int | float:
    if value is None:
        return 1.0
    if isinstance(value, bool):
        raise MisconfigurationException(
            f"{name}={value!r}: expected an int >= 0 or a float in [0, 1]"
        )
    if isinstance(value, int) and value >= 0:
        return value
    if isinstance(value, float) and 0.0 <= value <= 1.0:
        return value
    raise MisconfigurationException(
        f"{name}={value!r}: expected an int number of batches >= 0 or a fraction in [0.0, 1.0]"
    )


def check_val_check_interval(value: Any) -> tuple[Any, float | None]:
    """The interval as given (1.0 for None) and, for a time (Lightning's "DD:HH:MM:SS", dict or
    timedelta), its seconds: validation then runs once that long has passed since the last one."""
    if value is None:
        return 1.0, None
    if isinstance(value, (str, dict, timedelta)):
        duration = parse_duration(value, "val_check_interval")
        assert duration is not None  # a value was given
        return value, duration.total_seconds()
    if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
        return value, None
    if isinstance(value, float) and 0.0 < value <= 1.0:
        return value, None
    raise MisconfigurationException(
        f"val_check_interval={value!r}: expected a fraction in (0.0, 1.0] of an epoch, an int "
        "number of batches >= 1, or a time ('DD:HH:MM:SS', a timedelta or a dict such as "
        "{'minutes': 30})"
    )


def check_fast_dev_run(value: Any) -> int:
    if value is True:
        return 1
    if value is False or value is None:
        return 0
    if isinstance(value, int) and value >= 0:
        return value
    raise MisconfigurationException(f"fast_dev_run={value!r}: expected a bool or an int >= 0")


def check_choice(name: str, value: Any, choices: tuple, expected: str) -> None:
    if value not in choices:
        raise MisconfigurationException(f"{name}={value!r}: expected {expected}")


def set_determinism(deterministic: Any, benchmark: bool | None) -> tuple[bool, bool, bool]:
    """Apply the run's determinism settings; returns the previous ones to restore afterwards."""
    previous = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
        torch.backends.cudnn.benchmark,
    )
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=deterministic == "warn")
    if benchmark is not None:
        torch.backends.cudnn.benchmark = benchmark
    elif deterministic:
        torch.backends.cudnn.benchmark = False
    return previous


def restore_determinism(previous: tuple[bool, bool, bool]) -> None:
    enabled, warn_only, benchmark = previous
    torch.use_deterministic_algorithms(enabled, warn_only=warn_only)
    torch.backends.cudnn.benchmark = benchmark


# what `barebones=True` turns off: the argument, its value off, and Lightning's words for it
_BAREBONES_OFF = (
    ("logger", (None, False), "Logging can impact raw speed"),
    ("enable_checkpointing", (None, False), "Checkpointing can impact raw speed"),
    ("enable_progress_bar", (None, False), "The progress bar can impact raw speed"),
    ("enable_model_summary", (None, False), "Model summary can impact raw speed"),
    ("log_every_n_steps", (None, 0), "Logging can impact raw speed"),
    ("num_sanity_val_steps", (None, 0), "Sanity checking can impact raw speed"),
    ("fast_dev_run", (False, 0), "Development run is not meant for raw speed evaluation"),
    ("detect_anomaly", (False,), "Anomaly detection can impact raw speed"),
    ("profiler", (None,), "Profiling can impact raw speed"),
)


def check_barebones(**given: Any) -> None:
    """Refuse what `barebones=True` turns off, in Lightning's words; say what it turns off."""
    for name, off, reason in _BAREBONES_OFF:
        value = given[name]
        if not any(type(value) is type(v) and value == v for v in off):
            raise MisconfigurationException(
                f"`Trainer(barebones=True, {name}={value!r})` was passed. {reason} so it is "
                "disabled in barebones mode."
            )
    info(
        "You are running in `Trainer(barebones=True)` mode: checkpointing, the progress bar, the "
        "model summary, logging (`self.log` records nothing), the sanity check, `fast_dev_run`, "
        "anomaly detection and profiling are off."
    )


def check_plugins(plugins: Any) -> None:
    if plugins is None or (isinstance(plugins, (list, tuple)) and not plugins):
        return
    given = ", ".join(
        type(p).__name__ if not isinstance(p, str) else repr(p)
        for p in (plugins if isinstance(plugins, (list, tuple)) else [plugins])
    )
    raise MisconfigurationException(
        f"plugins=[{given}]: ltrain supports no Lightning plugin; set precision=..., "
        "strategy=... or sync_batchnorm=True instead, or leave plugins at None"
    )
