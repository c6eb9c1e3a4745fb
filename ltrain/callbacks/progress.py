"""Progress display: a tqdm bar in a terminal or notebook, plain lines everywhere else.

A bar is refreshed at most every `refresh_seconds`, and that refresh is the only moment the
`prog_bar` values cross to the host, so showing them costs no per-batch GPU sync. When stdout is
not a terminal (CI, `nohup`, a pipe) the bar would write carriage returns into a log, so the
callback prints one line per epoch instead, and one every `line_seconds` within long epochs.
"""

from __future__ import annotations

import sys
import time
from typing import Any

from ltrain.callbacks.base import Callback
from ltrain.console import info
from ltrain.results import to_floats


def _in_notebook() -> bool:
    shell = getattr(sys.modules.get("IPython"), "get_ipython", lambda: None)()
    return type(shell).__name__ == "ZMQInteractiveShell"


class ProgressBar(Callback):
    """Base class of progress displays (so the trainer can find and replace them)."""


class TQDMProgressBar(ProgressBar):
    def __init__(self, refresh_seconds: float = 0.2, line_seconds: float = 30.0) -> None:
        self.refresh_seconds = refresh_seconds
        self.line_seconds = line_seconds
        self._bar: Any = None
        self._eval_bar: Any = None
        self._last_refresh = 0.0
        self._epoch_start = 0.0

    def _mode(self) -> str:
        if _in_notebook():
            return "notebook"
        return "bar" if sys.stdout.isatty() else "lines"

    def _new_bar(self, total: float, description: str, leave: bool) -> Any:
        if self._mode() == "notebook":
            from tqdm.auto import tqdm  # the widget bar, or tqdm's text bar without ipywidgets
        else:
            from tqdm import tqdm
        return tqdm(
            total=None if total == float("inf") else total,
            desc=description,
            leave=leave,
            dynamic_ncols=True,
            file=sys.stdout,
        )

    def metrics_text(self, trainer: Any) -> str:
        values = to_floats(trainer.progress_bar_metrics) if trainer.progress_bar_metrics else {}
        parts = [f"{k}={v:.3g}" for k, v in values.items()]
        version = getattr(trainer.logger, "version", None) if trainer.loggers else None
        if version is not None:
            parts.append(f"v_num={version}")
        return ", ".join(parts)

    def _epoch_title(self, trainer: Any) -> str:
        return f"Epoch {trainer.current_epoch}"

    # ------------------------------------------------------------------ training
    def on_train_epoch_start(self, trainer: Any, pl_module: Any) -> None:
        self._epoch_start = self._last_refresh = time.monotonic()
        if self._mode() != "lines" and trainer.is_global_zero:
            self._close()
            self._bar = self._new_bar(
                trainer.num_training_batches, self._epoch_title(trainer), True
            )

    def on_train_batch_end(
        self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        now = time.monotonic()
        if self._bar is not None:
            if now - self._last_refresh >= self.refresh_seconds:
                self._last_refresh = now
                self._bar.n = batch_idx + 1
                self._bar.set_postfix_str(self.metrics_text(trainer), refresh=False)
                self._bar.refresh()
        elif now - self._last_refresh >= self.line_seconds and trainer.is_global_zero:
            self._last_refresh = now
            info(self._line(trainer, batch_idx + 1, now))

    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        if self._bar is not None:
            self._bar.n = self._bar.total or self._bar.n
            self._bar.set_postfix_str(self.metrics_text(trainer), refresh=False)
            self._close()
        elif trainer.is_global_zero:
            batches = trainer.num_training_batches
            info(self._line(trainer, batches, time.monotonic()))

    def _line(self, trainer: Any, done: float, now: float) -> str:
        total = trainer.num_training_batches
        count = f"{done}/{total}" if total != float("inf") else f"{done}"
        metrics = self.metrics_text(trainer)
        text = f"{self._epoch_title(trainer)}: {count} batches, {now - self._epoch_start:.1f}s"
        return f"{text}, {metrics}" if metrics else text

    # ------------------------------------------------------------------ evaluation
    def on_validation_start(self, trainer: Any, pl_module: Any) -> None:
        self._open_eval_bar(trainer, "Sanity Checking" if trainer.sanity_checking else "Validation")

    def on_test_start(self, trainer: Any, pl_module: Any) -> None:
        self._open_eval_bar(trainer, "Testing")

    def on_predict_start(self, trainer: Any, pl_module: Any) -> None:
        self._open_eval_bar(trainer, "Predicting")

    def _open_eval_bar(self, trainer: Any, title: str) -> None:
        self._eval_bar = None
        if self._mode() == "lines" or not trainer.is_global_zero:
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
        self._eval_bar = self._new_bar(total, title, leave=self._bar is None)

    def _advance_eval_bar(self) -> None:
        if self._eval_bar is not None:
            self._eval_bar.update(1)

    def on_validation_batch_end(self, trainer: Any, pl_module: Any, *args: Any) -> None:
        self._advance_eval_bar()

    def on_test_batch_end(self, trainer: Any, pl_module: Any, *args: Any) -> None:
        self._advance_eval_bar()

    def on_predict_batch_end(self, trainer: Any, pl_module: Any, *args: Any) -> None:
        self._advance_eval_bar()

    def _close_eval_bar(self) -> None:
        if self._eval_bar is not None:
            self._eval_bar.close()
            self._eval_bar = None

    def on_validation_end(self, trainer: Any, pl_module: Any) -> None:
        self._close_eval_bar()

    def on_test_end(self, trainer: Any, pl_module: Any) -> None:
        self._close_eval_bar()

    def on_predict_end(self, trainer: Any, pl_module: Any) -> None:
        self._close_eval_bar()

    def _close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def on_train_end(self, trainer: Any, pl_module: Any) -> None:
        self._close()

    def on_exception(self, trainer: Any, pl_module: Any, exception: BaseException) -> None:
        self._close()
        self._close_eval_bar()
