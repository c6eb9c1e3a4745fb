"""The learning-rate finder and the learning-rate monitor."""

from __future__ import annotations

import random

import matplotlib.image
import pandas as pd
import pytest
import torch
import yaml
from boring import BoringModel, boring_loader, quiet_trainer
from click.testing import CliRunner

import ltrain as pl
from ltrain.app.cli import main
from ltrain.callbacks import LearningRateMonitor
from ltrain.errors import MisconfigurationException
from ltrain.tuner import Tuner


def test_lr_find_restores_weights_and_generators_exactly_and_sets_lr(tmp_path):
    model = BoringModel(lr=0.1)
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    torch.manual_seed(3)
    random.seed(3)
    expected_draws = (torch.rand(1), random.random())
    torch.manual_seed(3)
    random.seed(3)
    trainer = quiet_trainer(tmp_path)
    finder = Tuner(trainer).lr_find(model, boring_loader(samples=256), num_training=30)
    assert all(torch.equal(weights[k], v) for k, v in model.state_dict().items())
    assert (torch.rand(1), random.random()) == expected_draws
    assert finder.suggestion() is not None
    assert model.lr == finder.suggestion()
    assert model.trainer is trainer


def test_lr_find_sweeps_exponentially_and_stops_when_the_loss_diverges(tmp_path):
    finder = Tuner(quiet_trainer(tmp_path)).lr_find(
        BoringModel(), boring_loader(samples=512), min_lr=1e-4, max_lr=1e4, num_training=50
    )
    lrs = finder.results["lr"]
    # Lightning's schedule: min_lr, then (step + 1) / num_training of the way, so the second
    # rate skips one factor and the rest grow by a constant one
    step = (1e4 / 1e-4) ** (1 / 50)
    assert lrs[0] == pytest.approx(1e-4) and lrs[1] == pytest.approx(1e-4 * step**2)
    ratios = [b / a for a, b in zip(lrs[1:], lrs[2:], strict=False)]
    assert max(ratios) == pytest.approx(min(ratios)) == pytest.approx(step)
    assert len(lrs) < 50  # an lr of 1e4 on a linear model diverges before the end


def test_lr_find_linear_mode_spaces_the_rates_evenly(tmp_path):
    finder = Tuner(quiet_trainer(tmp_path)).lr_find(
        BoringModel(), boring_loader(samples=256), min_lr=0.01, max_lr=0.1, num_training=10,
        mode="linear", early_stop_threshold=None, update_attr=False,
    )  # fmt: skip
    expected = [0.01] + [0.01 + (k + 1) / 10 * 0.09 for k in range(1, 10)]
    assert finder.results["lr"] == pytest.approx(expected)
    with pytest.raises(
        MisconfigurationException, match="mode='cosine': expected 'exponential' or 'linear'"
    ):
        Tuner(quiet_trainer(tmp_path)).lr_find(BoringModel(), boring_loader(), mode="cosine")


def test_lr_find_files_and_plot(tmp_path):
    finder = Tuner(quiet_trainer(tmp_path)).lr_find(
        BoringModel(), boring_loader(samples=256), num_training=30, update_attr=False
    )
    csv_path, png_path = finder.save(tmp_path)
    table = pd.read_csv(csv_path)
    assert list(table.columns) == ["lr", "loss"] and len(table) == len(finder.results["lr"])
    assert matplotlib.image.imread(png_path).shape[2] in (3, 4)
    axes = finder.plot().axes[0]
    assert axes.get_xscale() == "log"
    assert (axes.get_xlabel(), axes.get_ylabel()) == ("Learning rate", "Loss")


def test_lr_find_refuses_a_model_without_lr(tmp_path):
    class NoLr(BoringModel):
        def __init__(self):
            super().__init__()
            del self.lr

    with pytest.raises(pl.MisconfigurationException, match="no `lr` or `learning_rate`"):
        Tuner(quiet_trainer(tmp_path)).lr_find(NoLr(), boring_loader())


def test_lr_find_command_writes_its_files_and_applies_to_a_config_copy(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "c.yaml").write_text(
        "name: lr\nmodel: {class_path: MLPClassifier, init_args: {in_features: 64}}\n"
        "data: {class_path: Digits}\ntrainer: {enable_progress_bar: false}\n"
    )
    result = CliRunner().invoke(main, ["lr-find", "c.yaml", "--num-training", "40", "--apply"])
    assert result.exit_code == 0, result.output
    folder = tmp_path / "runs" / "lr" / "version_0"
    assert sorted(p.name for p in folder.iterdir()) == [
        "config.yaml",
        "lr_find.csv",
        "lr_find.png",
        "run.json",
    ]
    suggested = float(result.output.split("Suggested learning rate: ")[1].split()[0])
    copy = yaml.safe_load((tmp_path / "c.lr-find.yaml").read_text())
    assert copy["model"]["init_args"]["lr"] == pytest.approx(suggested, rel=5e-3)
    assert copy["data"] == {"class_path": "Digits"}  # the rest of the config as written


def test_lr_monitor_logs_each_epoch_with_lightnings_names(tmp_path):
    class TwoGroups(BoringModel):
        def configure_optimizers(self):
            groups = [{"params": self.layer.weight}, {"params": self.layer.bias, "lr": 0.5}]
            optimizer = torch.optim.SGD(groups, lr=0.1)
            return [optimizer], [torch.optim.lr_scheduler.StepLR(optimizer, 1, gamma=0.5)]

    trainer = quiet_trainer(
        tmp_path, max_epochs=3, callbacks=[LearningRateMonitor(logging_interval="epoch")]
    )
    trainer.fit(TwoGroups(), boring_loader(samples=32))
    metrics = pd.read_csv(tmp_path / "lightning_logs" / "version_0" / "metrics.csv")
    rows = metrics.dropna(subset=["lr-SGD/pg1"])
    assert rows["lr-SGD/pg1"].tolist() == pytest.approx([0.1, 0.05, 0.025])
    assert rows["lr-SGD/pg2"].tolist() == pytest.approx([0.5, 0.25, 0.125])
    assert rows["step"].tolist() == [0, 4, 8]


def test_lr_monitor_step_interval_follows_log_every_n_steps(tmp_path):
    class Scheduled(BoringModel):
        def configure_optimizers(self):
            optimizer = torch.optim.Adam(self.parameters(), lr=0.01)
            scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1 / (step + 1))
            return {
                "optimizer": optimizer,
                "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
            }

    trainer = quiet_trainer(
        tmp_path, max_epochs=1, log_every_n_steps=2, callbacks=[LearningRateMonitor()]
    )
    trainer.fit(Scheduled(), boring_loader(samples=64))
    metrics = pd.read_csv(tmp_path / "lightning_logs" / "version_0" / "metrics.csv")
    rows = metrics.dropna(subset=["lr-Adam"])
    assert rows["step"].tolist() == [1, 3, 5, 7]
    assert rows["lr-Adam"].tolist() == pytest.approx([0.01 / 2, 0.01 / 4, 0.01 / 6, 0.01 / 8])


def test_lr_monitor_without_a_logger_is_refused(tmp_path):
    trainer = quiet_trainer(tmp_path, logger=False, callbacks=[LearningRateMonitor()])
    with pytest.raises(pl.MisconfigurationException, match="needs a logger"):
        trainer.fit(BoringModel(), boring_loader())
