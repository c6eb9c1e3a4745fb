"""`RichProgressBar` and `RichModelSummary`: Lightning's displays drawn with the `rich` package.

`rich` is an optional extra (`pip install 'ltrain[rich]'`), imported when one of them is made.
The bar shows what `TQDMProgressBar` shows (`get_metrics`: `v_num`, then the `prog_bar` values)
and the summary has `ModelSummary`'s rows and totals, as a rich table.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ltrain.callbacks.model_summary import ModelSummary, format_totals, summarize
from ltrain.callbacks.progress import ProgressBar
from ltrain.errors import MisconfigurationException

if TYPE_CHECKING:
    from rich.style import Style

    from ltrain.module import Module
    from ltrain.trainer.trainer import Trainer


def _require_rich(name: str) -> None:
    if importlib.util.find_spec("rich") is None:
        raise ImportError(f"{name} needs rich: pip install 'ltrain[rich]'")


@dataclass
class RichProgressBarTheme:
    """The styles of the bar's parts (rich style strings or `Style`s), with Lightning's defaults."""

    description: str | Style = ""
    progress_bar: str | Style = "#6206E0"
    progress_bar_finished: str | Style = "#6206E0"
    progress_bar_pulse: str | Style = "#6206E0"
    batch_progress: str | Style = ""
    time: str | Style = "dim"
    processing_speed: str | Style = "dim underline"
    metrics: str | Style = "italic"
    metrics_text_delimiter: str = " "
    metrics_format: str = ".3f"


def _of(total: int | None) -> str:
    """A bar's count of batches ('?' for an iterable without a length)."""
    return "?" if total is None else str(total)


def _columns(theme: RichProgressBarTheme) -> list[Any]:
    """The bar's columns: title, bar, batches, elapsed and remaining time, speed, metrics."""
    from rich import progress
    from rich.text import Text

    class Styled(progress.ProgressColumn):
        def __init__(self, column: progress.ProgressColumn, style: str | Style) -> None:
            super().__init__()
            self.column, self.style = column, style

        def render(self, task: progress.Task) -> Text:
            return Text(str(self.column.render(task)), style=self.style)

    class Speed(progress.ProgressColumn):
        def render(self, task: progress.Task) -> Text:
            shown = f"{task.speed:.2f}it/s" if task.speed else ""
            return Text(shown, style=theme.processing_speed)

    return [
        progress.TextColumn("{task.description}", style=theme.description),
        progress.BarColumn(
            complete_style=theme.progress_bar,
            finished_style=theme.progress_bar_finished,
            pulse_style=theme.progress_bar_pulse,
        ),
        progress.TextColumn("{task.completed:.0f}/{task.fields[of]}", style=theme.batch_progress),
        Styled(progress.TimeElapsedColumn(), theme.time),
        Styled(progress.TimeRemainingColumn(), theme.time),
        Speed(),
        progress.TextColumn("{task.fields[metrics]}", style=theme.metrics, markup=False),
    ]


class RichProgressBar(ProgressBar):
    """A rich progress display with Lightning's arguments.

    `refresh_rate`: batches between updates (0 shows nothing); `leave`: keep each epoch's finished
    training bar instead of reusing one bar for the fit; `theme`: a `RichProgressBarTheme`;
    `console_kwargs`: arguments of the `rich.console.Console` it draws on.
    """

    def __init__(
        self,
        refresh_rate: int = 100,
        leave: bool = False,
        theme: RichProgressBarTheme | None = None,
        console_kwargs: dict[str, Any] | None = None,
    ) -> None:
        _require_rich("RichProgressBar")
        if isinstance(refresh_rate, bool) or not isinstance(refresh_rate, int) or refresh_rate < 0:
            raise MisconfigurationException(
                f"RichProgressBar refresh_rate={refresh_rate!r}: expected an int >= 0"
            )
        self._refresh_rate = refresh_rate
        self._leave = leave
        self.theme = theme or RichProgressBarTheme()
        self._console_kwargs = console_kwargs or {}
        self.progress: Any = None  # a rich.progress.Progress while a stage runs
        self._train_task: Any = None
        self._eval_task: Any = None

    @property
    def refresh_rate(self) -> int:
        return self._refresh_rate

    @property
    def is_enabled(self) -> bool:
        return self._enabled and self.refresh_rate > 0

    def metrics_text(self, trainer: Trainer) -> str:
        shown = self.get_metrics(trainer, trainer.lightning_module)
        spec = self.theme.metrics_format
        return self.theme.metrics_text_delimiter.join(
            f"{k}: {v:{spec}}" if isinstance(v, float) else f"{k}: {v}" for k, v in shown.items()
        )

    def _start(self, trainer: Trainer) -> bool:
        """Open the display if this rank shows one; whether it is open."""
        if self.progress is None and self.is_enabled and trainer.is_global_zero:
            from rich import progress
            from rich.console import Console

            self.progress = progress.Progress(
                *_columns(self.theme),
                console=Console(**self._console_kwargs),
            )
            self.progress.start()
        return self.progress is not None

    def _stop(self) -> None:
        if self.progress is not None:
            self.progress.stop()
        self.progress = self._train_task = self._eval_task = None

    @staticmethod
    def _total(count: float) -> int | None:
        return None if count == float("inf") else int(count)

    # ------------------------------------------------------------------ training
    def on_train_epoch_start(self, trainer: Trainer, pl_module: Module) -> None:
        if not self._start(trainer):
            return
        title, total = f"Epoch {trainer.current_epoch}", self._total(trainer.num_training_batches)
        if self._train_task is None or self._leave:
            self._train_task = self.progress.add_task(title, total=total, metrics="", of=_of(total))
        else:  # one bar for the fit, reset each epoch
            self.progress.reset(
                self._train_task, total=total, description=title, metrics="", of=_of(total)
            )

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: Module, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if self._train_task is not None and (batch_idx + 1) % self.refresh_rate == 0:
            metrics = self.metrics_text(trainer)
            self.progress.update(self._train_task, completed=batch_idx + 1, metrics=metrics)

    def on_train_epoch_end(self, trainer: Trainer, pl_module: Module) -> None:
        if self._train_task is not None:
            done = self._total(trainer.num_training_batches)
            metrics = self.metrics_text(trainer)
            self.progress.update(self._train_task, completed=done, metrics=metrics)

    def on_train_end(self, trainer: Trainer, pl_module: Module) -> None:
        self._stop()

    # ------------------------------------------------------------------ evaluation
    def _open_eval(self, trainer: Trainer, title: str, counts: list[float]) -> None:
        if not self._start(trainer):
            return
        count = sum(counts)
        if trainer.sanity_checking and trainer.num_sanity_val_steps != -1:
            count = sum(min(n, trainer.num_sanity_val_steps) for n in counts)
        total = self._total(count)
        self._eval_task = self.progress.add_task(title, total=total, metrics="", of=_of(total))

    def _advance_eval(self) -> None:
        if self._eval_task is not None:
            self.progress.advance(self._eval_task)

    def _close_eval(self) -> None:
        """An evaluation bar disappears when it ends within a fit; outside one the display ends."""
        if self._train_task is None:
            self._stop()
        elif self._eval_task is not None:
            self.progress.remove_task(self._eval_task)
            self._eval_task = None

    def on_validation_start(self, trainer: Trainer, pl_module: Module) -> None:
        title = "Sanity Checking" if trainer.sanity_checking else "Validation"
        self._open_eval(trainer, title, trainer.num_val_batches)

    def on_test_start(self, trainer: Trainer, pl_module: Module) -> None:
        self._open_eval(trainer, "Testing", trainer.num_test_batches)

    def on_predict_start(self, trainer: Trainer, pl_module: Module) -> None:
        self._open_eval(trainer, "Predicting", trainer.num_predict_batches)

    def on_validation_batch_end(self, trainer: Trainer, pl_module: Module, *args: Any) -> None:
        self._advance_eval()

    def on_test_batch_end(self, trainer: Trainer, pl_module: Module, *args: Any) -> None:
        self._advance_eval()

    def on_predict_batch_end(self, trainer: Trainer, pl_module: Module, *args: Any) -> None:
        self._advance_eval()

    def on_validation_end(self, trainer: Trainer, pl_module: Module) -> None:
        self._close_eval()

    def on_test_end(self, trainer: Trainer, pl_module: Module) -> None:
        self._close_eval()

    def on_predict_end(self, trainer: Trainer, pl_module: Module) -> None:
        self._close_eval()

    def on_exception(self, trainer: Trainer, pl_module: Module, exception: BaseException) -> None:
        self._stop()


class RichModelSummary(ModelSummary):
    """`ModelSummary`'s rows and totals as a rich table, at fit start; `header_style` (a
    summarize keyword, as in Lightning) styles the header row."""

    def __init__(self, max_depth: int = 1, **summarize_kwargs: Any) -> None:
        _require_rich("RichModelSummary")
        super().__init__(max_depth)
        self._summarize_kwargs = summarize_kwargs

    def on_fit_start(self, trainer: Trainer, pl_module: Module) -> None:
        if not self.max_depth or not trainer.is_global_zero:
            return
        from rich import get_console
        from rich.table import Table

        summary = summarize(
            pl_module, self.max_depth, trainer.precision, trainer.precision_plugin.forward_context()
        )
        table = Table(header_style=self._summarize_kwargs.get("header_style", "bold magenta"))
        right = {"Params", "FLOPs", "In sizes", "Out sizes"}
        for header, _ in summary.columns:
            table.add_column(header, justify="right" if header in right else "left")
        for row in zip(*(cells for _, cells in summary.columns), strict=True):
            table.add_row(*row)
        console = get_console()
        console.print(table)
        console.print("\n".join(format_totals(summary)), markup=False, highlight=False)
