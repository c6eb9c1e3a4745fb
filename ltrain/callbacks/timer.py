"""`Timer`: time each stage, and stop fitting when a time budget is spent (`Trainer(max_time=)`)."""

from __future__ import annotations

import re
import time
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from ltrain.callbacks.base import Callback
from ltrain.console import info
from ltrain.errors import MisconfigurationException

if TYPE_CHECKING:
    from ltrain.module import Module
    from ltrain.trainer.trainer import Trainer

STAGES = ("train", "sanity_check", "validate", "test", "predict")


def parse_duration(value: str | timedelta | dict[str, int] | None, name: str) -> timedelta | None:
    """`value` as a timedelta: "DD:HH:MM:SS", a timedelta, or a dict of timedelta's arguments."""
    if value is None or isinstance(value, timedelta):
        return value
    if isinstance(value, dict):
        try:
            return timedelta(**value)
        except TypeError:
            pass
    elif isinstance(value, str) and re.fullmatch(r"\d+:\d+:\d+:\d+", value.strip()):
        days, hours, minutes, seconds = (int(part) for part in value.strip().split(":"))
        return timedelta(days=days, hours=hours, minutes=minutes, seconds=seconds)
    raise MisconfigurationException(
        f"{name}={value!r}: expected a time as 'DD:HH:MM:SS' (e.g. '00:12:00:00'), a "
        "datetime.timedelta, or a dict such as {'hours': 12}"
    )


class Timer(Callback):
    """Track the time spent in each stage (`time_elapsed("train")`, `time_remaining()`); with a
    `duration`, ask the trainer to stop once training has run that long, checked after every
    training batch (`interval="step"`) or epoch (`"epoch"`). Resumed fits count the time spent
    before the checkpoint."""

    def __init__(
        self,
        duration: str | timedelta | dict[str, int] | None = None,
        interval: str = "step",
        verbose: bool = True,
    ) -> None:
        if interval not in ("step", "epoch"):
            raise MisconfigurationException(
                f"Unsupported parameter value `Timer(interval={interval})`. Possible values are: "
                "step, epoch."
            )
        duration = parse_duration(duration, "Timer(duration)")
        self._duration = duration.total_seconds() if duration is not None else None
        self._interval = interval
        self._verbose = verbose
        self._start_time: dict[str, float | None] = dict.fromkeys(STAGES)
        self._end_time: dict[str, float | None] = dict.fromkeys(STAGES)
        self._offset = 0.0

    def start_time(self, stage: str = "train") -> float | None:
        return self._start_time[stage]

    def end_time(self, stage: str = "train") -> float | None:
        return self._end_time[stage]

    def time_elapsed(self, stage: str = "train") -> float:
        """Seconds spent in `stage` (its latest run; training also counts a resumed run's past)."""
        start, end = self._start_time[stage], self._end_time[stage]
        offset = self._offset if stage == "train" else 0.0
        if start is None:
            return offset
        return offset + (end if end is not None else time.monotonic()) - start

    def time_remaining(self, stage: str = "train") -> float | None:
        if self._duration is None:
            return None
        return self._duration - self.time_elapsed(stage)

    def _start(self, stage: str) -> None:
        self._start_time[stage] = time.monotonic()
        self._end_time[stage] = None

    def _end(self, stage: str) -> None:
        self._end_time[stage] = time.monotonic()

    def on_train_start(self, trainer: Trainer, pl_module: Module) -> None:
        self._start("train")

    def on_train_end(self, trainer: Trainer, pl_module: Module) -> None:
        self._end("train")

    def on_validation_start(self, trainer: Trainer, pl_module: Module) -> None:
        self._start("validate")

    def on_validation_end(self, trainer: Trainer, pl_module: Module) -> None:
        self._end("validate")

    def on_test_start(self, trainer: Trainer, pl_module: Module) -> None:
        self._start("test")

    def on_test_end(self, trainer: Trainer, pl_module: Module) -> None:
        self._end("test")

    def on_predict_start(self, trainer: Trainer, pl_module: Module) -> None:
        self._start("predict")

    def on_predict_end(self, trainer: Trainer, pl_module: Module) -> None:
        self._end("predict")

    def on_fit_start(self, trainer: Trainer, pl_module: Module) -> None:
        # a checkpoint's timer may already be spent: stop before the first batch
        self._check_time_remaining(trainer)

    def on_train_batch_end(self, trainer: Trainer, pl_module: Module, *args: Any) -> None:
        if self._interval == "step":
            self._check_time_remaining(trainer)

    def on_train_epoch_end(self, trainer: Trainer, pl_module: Module) -> None:
        if self._interval == "epoch":
            self._check_time_remaining(trainer)

    def state_dict(self) -> dict[str, Any]:
        return {"time_elapsed": {stage: self.time_elapsed(stage) for stage in STAGES}}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._offset = state_dict.get("time_elapsed", {}).get("train", 0.0)

    def _check_time_remaining(self, trainer: Trainer) -> None:
        if self._duration is None:
            return
        # every rank stops together: rank zero's clock decides
        spent = bool(trainer.strategy.broadcast(self.time_elapsed() >= self._duration))
        trainer.should_stop = trainer.should_stop or spent
        if spent and self._verbose:
            elapsed = timedelta(seconds=int(self.time_elapsed()))
            info(f"Time limit reached. Elapsed time is {elapsed}. Signaling Trainer to stop.")
