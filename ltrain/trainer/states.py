"""`trainer.state`: what the trainer is doing, with Lightning's names and string values.

`fn` is the entry point that runs (or ran last), `stage` the loop running inside it (None between
runs), `status` whether a run is going, finished, or ended early (an exception or an interrupt).
The enums are `str` subclasses, so `trainer.state.fn == "fit"` holds as in Lightning.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class TrainerFn(str, Enum):
    FITTING = "fit"
    VALIDATING = "validate"
    TESTING = "test"
    PREDICTING = "predict"


class RunningStage(str, Enum):
    TRAINING = "train"
    SANITY_CHECKING = "sanity_check"
    VALIDATING = "validate"
    TESTING = "test"
    PREDICTING = "predict"


class TrainerStatus(str, Enum):
    INITIALIZING = "initializing"
    RUNNING = "running"
    FINISHED = "finished"
    INTERRUPTED = "interrupted"


@dataclass
class TrainerState:
    status: TrainerStatus = TrainerStatus.INITIALIZING
    fn: TrainerFn | None = None
    stage: RunningStage | None = None

    @property
    def finished(self) -> bool:
        return self.status == TrainerStatus.FINISHED
