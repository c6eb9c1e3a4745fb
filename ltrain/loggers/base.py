"""`Logger`: the interface the trainer writes metrics and hyperparameters through.

Loggers receive Python floats keyed as they should be stored, with `epoch` already in the dict
and the step passed separately (as Lightning does); they never aggregate.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


class Logger:
    """Base class for loggers; subclasses override what they store."""

    @property
    def name(self) -> str | None:
        return None

    @property
    def version(self) -> int | str | None:
        return None

    @property
    def save_dir(self) -> str | None:
        return None

    @property
    def root_dir(self) -> str | None:
        return None

    @property
    def log_dir(self) -> str | None:
        return None

    @property
    def fixed_log_dir(self) -> str | None:
        """`log_dir` if asking for it creates nothing (no version folder to claim first)."""
        return self.log_dir

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        """Store one row of values."""

    def log_hyperparams(self, params: Mapping[str, Any]) -> None:
        """Store the module's hyperparameters."""

    def save(self) -> None:
        """Make everything logged so far durable."""

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint records of the logger, so a resume can continue it exactly."""
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Return to the state a checkpoint recorded (e.g. drop rows written after it)."""

    def finalize(self, status: str) -> None:
        """Called once when a run ends with status 'success', 'failed' or 'interrupted'."""
        self.save()
