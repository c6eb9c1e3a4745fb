"""The progress display takes Lightning's TQDMProgressBar arguments and its get_metrics hook."""

from __future__ import annotations

from typing import Any

import pytest
import torch
import yaml
from boring import BoringModel, boring_loader, digits_config, quiet_trainer
from click.testing import CliRunner
from torch.nn import functional as F

import ltrain as pl
from ltrain.app.cli import main
from ltrain.callbacks import TQDMProgressBar

pytestmark = pytest.mark.filterwarnings("ignore:You defined a validation_step:UserWarning")


class ShownLoss(BoringModel):
    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = F.mse_loss(self(x), y)
        self.log("loss", loss, prog_bar=True)
        return loss


def fit_with(tmp_path: Any, bar: pl.Callback, epochs: int = 2, batches: int = 5) -> None:
    trainer = quiet_trainer(tmp_path, max_epochs=epochs, callbacks=[bar], enable_progress_bar=True)
    trainer.fit(ShownLoss(), boring_loader(samples=8 * batches, batch_size=8))


def test_without_a_terminal_one_line_per_epoch_shows_the_version_then_the_values(tmp_path, capsys):
    fit_with(tmp_path, TQDMProgressBar())
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("Epoch")]
    assert [line.split(":")[0] for line in lines] == ["Epoch 0", "Epoch 1"]
    assert all(", v_num=0, loss=" in line and "5/5 batches" in line for line in lines)


def test_refresh_rate_zero_shows_nothing(tmp_path, capsys):
    bar = TQDMProgressBar(refresh_rate=0)
    assert bar.is_disabled
    fit_with(tmp_path, bar)
    assert "Epoch" not in capsys.readouterr().out


def test_an_overridden_get_metrics_decides_what_is_shown(tmp_path, capsys):
    class WithoutVersion(TQDMProgressBar):
        def get_metrics(self, trainer: Any, pl_module: Any) -> dict[str, Any]:
            shown = super().get_metrics(trainer, pl_module)
            shown.pop("v_num", None)
            return shown

    fit_with(tmp_path, WithoutVersion(), epochs=1)
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("Epoch 0"))
    assert "v_num" not in line and "loss=" in line


@pytest.mark.parametrize("bad", [-1, 1.5, True])
def test_a_bad_refresh_rate_is_refused_by_name(bad):
    with pytest.raises(pl.MisconfigurationException, match="refresh_rate=.*expected an int >= 0"):
        TQDMProgressBar(refresh_rate=bad)


class TerminalBar(TQDMProgressBar):
    """The bar a terminal gets, recording the bars it opens and the counts it draws."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, refresh_seconds=0.0, **kwargs)
        self.opened: list[Any] = []
        self.drawn: list[int] = []

    def _mode(self) -> str:
        return "bar"

    def _new_bar(self, *args: Any, **kwargs: Any) -> Any:
        bar = super()._new_bar(*args, **kwargs)
        self.opened.append(bar)
        original_refresh = bar.refresh

        def refresh(*a: Any, **k: Any) -> Any:
            self.drawn.append(bar.n)
            return original_refresh(*a, **k)

        bar.refresh = refresh
        return bar


def test_in_a_terminal_one_bar_serves_the_whole_fit_unless_leave(tmp_path):
    reused = TerminalBar()
    fit_with(tmp_path / "reused", reused, epochs=3)
    assert len(reused.opened) == 1
    left = TerminalBar(leave=True)
    fit_with(tmp_path / "left", left, epochs=3)
    assert len(left.opened) == 3


def test_refresh_rate_counts_batches_between_redraws(tmp_path):
    bar = TerminalBar(refresh_rate=2)
    fit_with(tmp_path, bar, epochs=1, batches=5)
    # every second batch, then the finished epoch (tqdm redraws it again when it closes)
    assert bar.drawn[:3] == [2, 4, 5] and set(bar.drawn[3:]) <= {5}


def test_a_bar_in_callbacks_with_the_bar_disabled_is_refused(tmp_path):
    with pytest.raises(pl.MisconfigurationException, match="enable_progress_bar=False"):
        quiet_trainer(tmp_path, callbacks=[TQDMProgressBar()], enable_progress_bar=False)


@pytest.mark.parametrize(
    ("bar_args", "trainer_args", "message"),
    [
        (
            {"refresh_rate": -1},
            {"enable_progress_bar": True},
            "TQDMProgressBar refresh_rate=-1: expected an int >= 0",
        ),
        ({}, {"enable_progress_bar": False}, "enable_progress_bar=False but a TQDMProgressBar"),
    ],
)
def test_a_bad_bar_setting_in_a_config_is_one_line_and_leaves_no_run_folder(
    tmp_path, monkeypatch, bar_args, trainer_args, message
):
    monkeypatch.chdir(tmp_path)
    bar = {"class_path": "TQDMProgressBar", "init_args": bar_args}
    config = digits_config(callbacks=[bar], **trainer_args)
    (tmp_path / "bar.yaml").write_text(yaml.safe_dump(config))
    result = CliRunner().invoke(main, ["fit", "bar.yaml"])
    assert result.exit_code == 2
    assert message in result.output and "Traceback" not in result.output
    assert not list(tmp_path.glob("runs/*/version_*"))
