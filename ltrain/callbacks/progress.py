"""Progress display: a tqdm bar in a terminal or notebook, plain lines everywhere else.

A bar is refreshed at most every `refresh_seconds`, and that refresh is the only moment the
`prog_bar` values cross to the host, so showing them costs no per-batch GPU sync. When stdout is
not a terminal (CI, `nohup`, a pipe) the bar would write carriage returns into a log, so the
callback prints one line per epoch instead, and one every `line_seconds` within long epochs.
"""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING, Any

from ltrain.callbacks.base import Callback
from ltrain.console import info
from ltrain.errors import MisconfigurationException
from ltrain.results import to_floats

if TYPE_CHECKING:
    from ltrain.module import Module
    from ltrain.trainer.trainer import Trainer


def _in_notebook() -> bool:
    shell = getattr(sys.modules.get("IPython"), "get_ipython", lambda: None)()
    return type(shell).__name__ == "ZMQInteractiveShell"


class ProgressBar(Callback):
    """Base class of progress displays (so the trainer can find and replace them)."""

    _enabled = True  # a class default: subclasses need not call this __init__

    @property
    def is_enabled(self) -> bool:
        return self._enabled

    @property
    def is_disabled(self) -> bool:
        return not self.is_enabled

    def enable(self) -> None:
        self._enabled = True

    def disable(self) -> None:
        self._enabled = False

    def get_metrics(self, trainer: Trainer, pl_module: Module) -> dict[str, int | str | float]:
        """What the display shows: the run's version as `v_num`, then the `prog_bar` values.

        Override it to change what is shown, as in Lightning (for instance to drop `v_num`). It is
        called only when the display refreshes: its floats are the values' one host transfer.
        """
        shown: dict[str, int | str | float] = {}
        version = getattr(trainer.logger, "version", None) if trainer.loggers else None
        if version is not None:
            shown["v_num"] = version[-4:] if isinstance(version, str) else version
        if trainer.progress_bar_metrics:
            shown.update(to_floats(trainer.progress_bar_metrics))
        return shown


class TQDMProgressBar(ProgressBar):
    """Lightning's default display, with Lightning's arguments.

    `refresh_rate`: batches between updates of the training bar (0 shows nothing at all);
    `process_position`: the line the bars use, for several trainings in one terminal;
    `leave`: keep each epoch's finished bar on screen instead of reusing one bar for the fit.
    Beyond Lightning: a bar is redrawn at most every `refresh_seconds`, and without a terminal one
    line is printed every `line_seconds` and at each epoch end.
    """

    def __init__(
        self,
        refresh_rate: int = 1,
        process_position: int = 0,
        leave: bool = False,
        *,
        refresh_seconds: float = 0.2,
        line_seconds: float = 30.0,
    ) -> None:
        for name, value in (("refresh_rate", refresh_rate), ("process_position", process_position)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise MisconfigurationException(
                    f"TQDMProgressBar {name}={value!r}: expected an int >= 0"
                )
        self.refresh_rate = refresh_rate
        self.process_position = process_position
        self.leave = leave
        self.refresh_seconds = refresh_seconds
        self.line_seconds = line_seconds
        self._bar: Any = None
        self._eval_bar: Any = None
        self._last_refresh = 0.0
        self._epoch_start = 0.0

    @property
    def is_enabled(self) -> bool:
        return self._enabled and self.refresh_rate > 0

    def _mode(self) -> str:
        if _in_notebook():
            return "notebook"
        return "bar" if sys.stdout.isatty() else "lines"

    def _new_bar(self, total: float, description: str, leave: bool, line: int = 0) -> Any:
        if self._mode() == "notebook":
            from tqdm.auto import tqdm  # the widget bar, or tqdm's text bar without ipywidgets
        else:
            from tqdm import tqdm
        return tqdm(
            total=None if total == float("inf") else total,
            desc=description,
            leave=leave,
            position=2 * self.process_position + line,
            dynamic_ncols=True,
            file=sys.stdout,
        )

    def metrics_text(self, trainer: Trainer) -> str:
        shown = self.get_metrics(trainer, trainer.lightning_module)
        return ", ".join(
            f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in shown.items()
        )

    def _epoch_title(self, trainer: Trainer) -> str:
        return f"Epoch {trainer.current_epoch}"

    # ------------------------------------------------------------------ training
    def on_train_epoch_start(self, trainer: Trainer, pl_module: Module) -> None:
        self._epoch_start = self._last_refresh = time.monotonic()
        if self._mode() == "lines" or not trainer.is_global_zero or self.is_disabled:
            return
        total = trainer.num_training_batches
        if self._bar is None or self.leave:
            self._close()  # with `leave`, the finished bar of the last epoch stays on screen
            self._bar = self._new_bar(total, self._epoch_title(trainer), True)
        else:  # as Lightning: one bar for the fit, reset each epoch
            self._bar.set_description(self._epoch_title(trainer), refresh=False)
            self._bar.reset(total=None if total == float("inf") else total)  # redraws it

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: Module, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        now = time.monotonic()
        if self._bar is not None:
            done = batch_idx + 1
            if now - self._last_refresh >= self.refresh_seconds and done % self.refresh_rate == 0:
                self._last_refresh = now
                self._bar.n = done
                self._bar.set_postfix_str(self.metrics_text(trainer), refresh=False)
                self._bar.refresh()
        elif (
            now - self._last_refresh >= self.line_seconds
            and trainer.is_global_zero
            and self.is_enabled
        ):
            self._last_refresh = now
            info(self._line(trainer, batch_idx + 1, now))

    def on_train_epoch_end(self, trainer: Trainer, pl_module: Module) -> None:
        if self._bar is not None:
            self._bar.n = self._bar.total or self._bar.n
            self._bar.set_postfix_str(self.metrics_text(trainer), refresh=False)
            self._bar.refresh()
        elif trainer.is_global_zero and self.is_enabled:
            batches = trainer.num_training_batches
            info(self._line(trainer, batches, time.monotonic()))

    def _line(self, trainer: Trainer, done: float, now: float) -> str:
        total = trainer.num_training_batches
        count = f"{done}/{total}" if total != float("inf") else f"{done}"
        metrics = self.metrics_text(trainer)
        text = f"{self._epoch_title(trainer)}: {count} batches, {now - self._epoch_start:.1f}s"
        return f"{text}, {metrics}" if metrics else text

    # ------------------------------------------------------------------ evaluation
    def on_validation_start(self, trainer: Trainer, pl_module: Module) -> None:
        self._open_eval_bar(trainer, "Sanity Checking" if trainer.sanity_checking else "Validation")

    def on_test_start(self, trainer: Trainer, pl_module: Module) -> None:
        self._open_eval_bar(trainer, "Testing")

    def on_predict_start(self, trainer: Trainer, pl_module: Module) -> None:
        self._open_eval_bar(trainer, "Predicting")

    def _open_eval_bar(self, trainer: Trainer, title: str) -> None:
        self._eval_bar = None
        if self._mode() == "lines" or not trainer.is_global_zero or self.is_disabled:
            return
        counts = {
            "Validation": trainer.num_val_batches,
            "Sanity Checking": trainer.num_val_batches,
            "Testing": trainer.num_test_batches,
            "Predicting": trainer.num_predict_batches,
        }[title]
        total = sum(counts)
        if title == "Sanity Checking" and trainer.num_sanity_val_steps != -1:
            total = sum(min(n, trainer.num_sanity_val_steps) for n in counts)
        training = self._bar is not None
        self._eval_bar = self._new_bar(total, title, leave=not training, line=int(training))

    def _advance_eval_bar(self) -> None:
        if self._eval_bar is not None:
            self._eval_bar.update(1)

    def on_validation_batch_end(self, trainer: Trainer, pl_module: Module, *args: Any) -> None:
        self._advance_eval_bar()

    def on_test_batch_end(self, trainer: Trainer, pl_module: Module, *args: Any) -> None:
        self._advance_eval_bar()

    def on_predict_batch_end(self, trainer: Trainer, pl_module: Module, *args: Any) -> None:
        self._advance_eval_bar()

    def _close_eval_bar(self) -> None:
        if self._eval_bar is not None:
            self._eval_bar.close()
            self._eval_bar = None

    def on_validation_end(self, trainer: Trainer, pl_module: Module) -> None:
        self._close_eval_bar()

    def on_test_end(self, trainer: Trainer, pl_module: Module) -> None:
        self._close_eval_bar()

    def on_predict_end(self, trainer: Trainer, pl_module: Module) -> None:
        self._close_eval_bar()

    def _close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def on_train_end(self, trainer: Trainer, pl_module: Module) -> None:
        self._close()

    def on_exception(self, trainer: Trainer, pl_module: Module, exception: BaseException) -> None:
        self._close()
        self._close_eval_bar()
