"""RichProgressBar and RichModelSummary: Lightning's arguments, TQDMProgressBar's metrics, the
summary's rows as a rich table, and an ImportError naming the extra without rich."""

from __future__ import annotations

import importlib.util
import io
import sys
from typing import Any

import pytest
import torch
from boring import BoringModel, boring_loader, quiet_trainer
from torch.nn import functional as F

import ltrain as pl
from ltrain.callbacks import RichModelSummary, RichProgressBar, TQDMProgressBar
from ltrain.callbacks.model_summary import format_totals, summarize
from ltrain.callbacks.rich_display import RichProgressBarTheme

needs_rich = pytest.mark.skipif(importlib.util.find_spec("rich") is None, reason="needs rich")
pytestmark = pytest.mark.filterwarnings("ignore:You defined a validation_step:UserWarning")


class ShownLoss(BoringModel):
    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = F.mse_loss(self(x), y)
        self.log("loss", loss, prog_bar=True)
        return loss


def fit_with(tmp_path: Any, *callbacks: pl.Callback, epochs: int = 2) -> pl.Trainer:
    trainer = quiet_trainer(tmp_path, max_epochs=epochs, callbacks=list(callbacks),
                            enable_progress_bar=True)  # fmt: skip
    trainer.fit(ShownLoss(), boring_loader(samples=40), boring_loader(samples=16))
    return trainer


def drawn(bar_options: dict[str, Any] | None = None) -> tuple[RichProgressBar, io.StringIO]:
    out = io.StringIO()
    console = {"file": out, "width": 200, "force_terminal": False}
    return RichProgressBar(**(bar_options or {}), console_kwargs=console), out


@pytest.mark.parametrize("name", ["RichProgressBar", "RichModelSummary"])
def test_without_rich_the_error_names_the_extra(monkeypatch, name):
    monkeypatch.setitem(sys.modules, "rich", None)
    with pytest.raises(ImportError, match=rf"{name} needs rich: pip install 'ltrain\[rich\]'"):
        getattr(pl.callbacks, name)()


@needs_rich
def test_the_bar_is_the_trainers_and_shows_what_tqdm_shows(tmp_path):
    bar, out = drawn()
    trainer = fit_with(tmp_path, bar)
    assert trainer.progress_bar_callback is bar
    assert bar.get_metrics(trainer, trainer.lightning_module) == TQDMProgressBar().get_metrics(
        trainer, trainer.lightning_module
    )
    text = out.getvalue()
    assert "Epoch 1" in text and "5/5" in text and "v_num: 0" in text and "loss: " in text
    assert "Validation" not in text  # an evaluation bar disappears when it ends within a fit


@needs_rich
def test_lightnings_arguments(tmp_path):
    theme = RichProgressBarTheme(metrics_format=".1e", metrics_text_delimiter=" | ")
    bar, out = drawn({"refresh_rate": 2, "leave": True, "theme": theme})
    assert (bar.refresh_rate, bar.theme) == (2, theme)
    fit_with(tmp_path, bar)
    text = out.getvalue()
    assert "Epoch 0" in text and "Epoch 1" in text  # leave: each epoch's bar stays
    assert "v_num: 0 | loss: " in text and "e-0" in text
    assert "it/s" in text  # the processing speed


@needs_rich
def test_refresh_rate_zero_shows_nothing(tmp_path):
    bar, out = drawn({"refresh_rate": 0})
    assert bar.is_disabled
    fit_with(tmp_path, bar)
    assert out.getvalue() == ""


@needs_rich
def test_test_and_predict_bars(tmp_path):
    bar, out = drawn()
    trainer = quiet_trainer(tmp_path, callbacks=[bar], enable_progress_bar=True)
    trainer.test(ShownLoss(), boring_loader(samples=24))
    trainer.predict(ShownLoss(), boring_loader(samples=16))
    assert "Testing" in out.getvalue() and "3/3" in out.getvalue()
    assert "Predicting" in out.getvalue() and "2/2" in out.getvalue()


@needs_rich
def test_the_summary_has_model_summarys_rows_and_totals(tmp_path, capsys):
    fit_with(tmp_path, RichModelSummary(max_depth=2, header_style="bold"), epochs=1)
    trainer = quiet_trainer(tmp_path)
    text = capsys.readouterr().out
    summary = summarize(ShownLoss(), 2, trainer.precision)
    for _, cells in summary.columns:
        assert all(cell in text for cell in cells)
    assert all(line in text for line in format_totals(summary))


@needs_rich
def test_the_rich_summary_replaces_the_default_one(tmp_path):
    summary = RichModelSummary()
    trainer = quiet_trainer(tmp_path, callbacks=[summary], enable_model_summary=True)
    assert [c for c in trainer.callbacks if isinstance(c, pl.callbacks.ModelSummary)] == [summary]
