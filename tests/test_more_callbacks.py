"""Tests of the callbacks issue 15 adds: what they are called with, what they leave behind."""

from __future__ import annotations

import csv
import importlib.util
import sys
import types
from typing import Any

import pytest
import torch
from boring import BoringModel, boring_loader, quiet_trainer
from torch.utils.data import DataLoader, TensorDataset

import ltrain as pl
from ltrain.callbacks import (
    BasePredictionWriter,
    Callback,
    DeviceStatsMonitor,
    EMAWeightAveraging,
    ModelCheckpoint,
    StochasticWeightAveraging,
    ThroughputMonitor,
    WeightAveraging,
)
from ltrain.errors import MisconfigurationException

pytestmark = [
    pytest.mark.filterwarnings("ignore:You defined a validation_step:UserWarning"),
    pytest.mark.filterwarnings("ignore:The dirpath has changed:UserWarning"),
]


class Predicts(BoringModel):
    def predict_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> Any:
        return self(batch[0])


class Recorder(BasePredictionWriter):
    def __init__(self, write_interval: Any) -> None:
        super().__init__(write_interval)
        self.seen: list[tuple] = []

    def write_on_batch_end(
        self, trainer, pl_module, prediction, batch_indices, batch, batch_idx, dataloader_idx
    ) -> None:
        self.seen.append(("batch", len(prediction), batch_indices, batch_idx, dataloader_idx))

    def write_on_epoch_end(self, trainer, pl_module, predictions, batch_indices) -> None:
        self.seen.append(("epoch", len(predictions), batch_indices))


def test_batch_writer_gets_each_batch_sample_indices_and_nothing_is_kept(tmp_path) -> None:
    writer = Recorder("batch")
    data = DataLoader(TensorDataset(torch.randn(10, 4)), batch_size=4)
    run = quiet_trainer(tmp_path, logger=False, callbacks=[writer])
    assert run.predict(Predicts(), data, return_predictions=False) is None
    assert writer.seen == [
        ("batch", 4, [0, 1, 2, 3], 0, 0),
        ("batch", 4, [4, 5, 6, 7], 1, 0),
        ("batch", 2, [8, 9], 2, 0),
    ]
    assert writer._record.predictions == []


def test_epoch_writer_gets_every_loader_predictions_and_indices(tmp_path) -> None:
    writer = Recorder("epoch")
    loaders = [boring_loader(6, batch_size=4), boring_loader(3, batch_size=2, shuffle=True)]
    run = quiet_trainer(tmp_path, logger=False, callbacks=[writer])
    assert run.predict(Predicts(), loaders, return_predictions=False) is None
    ((kind, count, indices),) = writer.seen
    assert (kind, count) == ("epoch", 2)
    assert indices[0] == [[0, 1, 2, 3], [4, 5]]
    assert sorted(i for batch in indices[1] for i in batch) == [0, 1, 2]


def test_write_interval_is_checked() -> None:
    with pytest.raises(MisconfigurationException, match="should be one of"):
        Recorder("step")


class Normed(BoringModel):
    """BatchNorm before the layer, momentum SGD and a halving schedule."""

    def __init__(self) -> None:
        super().__init__()
        self.norm = torch.nn.BatchNorm1d(4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(self.norm(x))

    def configure_optimizers(self) -> Any:
        optimizer = torch.optim.SGD(self.parameters(), lr=self.lr, momentum=0.9)
        return [optimizer], [torch.optim.lr_scheduler.StepLR(optimizer, 1, gamma=0.5)]


def _swa_fit(
    tmp_path, name: str, ckpt_path: Any = None
) -> tuple[Normed, StochasticWeightAveraging]:
    model = Normed()
    averaging = StochasticWeightAveraging(swa_lrs=0.05, swa_epoch_start=2, annealing_epochs=2)
    every = ModelCheckpoint(dirpath=tmp_path / name, save_top_k=-1)
    run = quiet_trainer(tmp_path, logger=False, max_epochs=4, callbacks=[averaging, every])
    run.fit(model, boring_loader(32, batch_size=8), ckpt_path=ckpt_path)
    return model, averaging


def test_swa_leaves_the_average_and_resumes_to_the_same_weights(tmp_path) -> None:
    torch.manual_seed(0)
    whole, averaging = _swa_fit(tmp_path, "whole")
    assert int(averaging.n_averaged) == 3  # the weights as epochs 1, 2 and 3 start
    assert whole.norm.momentum == 0.1  # put back after the BatchNorm epoch
    torch.manual_seed(0)
    again, _ = _swa_fit(tmp_path, "again")
    middle = next((tmp_path / "again").glob("epoch=2-*.ckpt"))
    resumed, resumed_averaging = _swa_fit(tmp_path, "resumed", ckpt_path=str(middle))
    assert int(resumed_averaging.n_averaged) == 3
    for key, value in whole.state_dict().items():
        assert torch.equal(resumed.state_dict()[key], value), key


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"swa_lrs": 0.1, "swa_epoch_start": 0}, "swa_epoch_start"),
        ({"swa_lrs": -1.0}, "swa_lrs"),
        ({"swa_lrs": 0.1, "annealing_strategy": "exp"}, "annealing_strategy"),
    ],
)
def test_swa_arguments_are_checked(options: dict, message: str) -> None:
    with pytest.raises(MisconfigurationException, match=message):
        StochasticWeightAveraging(**options)


class StepWeights(Callback):
    def __init__(self) -> None:
        self.seen: list[torch.Tensor] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.seen.append(pl_module.layer.weight.detach().clone())


def test_weight_averaging_ends_on_the_mean_of_every_step(tmp_path) -> None:
    steps = StepWeights()
    model = BoringModel()
    run = quiet_trainer(tmp_path, logger=False, max_epochs=2, callbacks=[WeightAveraging(), steps])
    run.fit(model, boring_loader(32, batch_size=8))
    assert len(steps.seen) == 8
    torch.testing.assert_close(model.layer.weight, torch.stack(steps.seen).mean(0))


def test_ema_updates_from_its_starting_step_every_n_steps(tmp_path) -> None:
    steps = StepWeights()
    ema = EMAWeightAveraging(decay=0.5, update_every_n_steps=2, update_starting_at_step=2)
    model = BoringModel()
    run = quiet_trainer(tmp_path, logger=False, max_epochs=2, callbacks=[ema, steps])
    run.fit(model, boring_loader(32, batch_size=8))
    updates = [steps.seen[i] for i in (2, 4, 6)]  # after steps with index 2, 4, 6
    expected = updates[0]
    for weights in updates[1:]:
        expected = 0.5 * expected + 0.5 * weights
    torch.testing.assert_close(model.layer.weight, expected)


def test_throughput_monitor_logs_totals_then_windowed_rates(tmp_path) -> None:
    monitor = ThroughputMonitor(batch_size_fn=lambda batch: len(batch[0]), window_size=3)
    logger = pl.loggers.CSVLogger(tmp_path, name="t")
    run = quiet_trainer(tmp_path, logger=logger, max_epochs=1, log_every_n_steps=1,
                        callbacks=[monitor])  # fmt: skip
    with pytest.warns(UserWarning, match="flops_per_batch"):
        run.fit(BoringModel(), boring_loader(32, batch_size=8))
    rows = [r for r in csv.DictReader((tmp_path / "t" / "version_0" / "metrics.csv").open())
            if r["train/batches"]]  # fmt: skip
    assert [(r["step"], r["train/batches"], r["train/samples"]) for r in rows] == [
        ("0", "1", "8"), ("1", "2", "16"), ("2", "3", "24"), ("3", "4", "32")
    ]  # fmt: skip
    assert [bool(r["train/device/samples_per_sec"]) for r in rows] == [False, False, True, True]
    assert float(rows[-1]["train/device/samples_per_sec"]) > 0


def _fake_psutil(monkeypatch) -> None:
    percent = types.SimpleNamespace(percent=12.5)
    fake = types.SimpleNamespace(
        virtual_memory=lambda: percent, swap_memory=lambda: percent, cpu_percent=lambda: 50.0
    )
    monkeypatch.setitem(sys.modules, "psutil", fake)
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: object() if name == "psutil" else real(name, *a),
    )


def test_device_stats_monitor_logs_cpu_stats_every_n_steps(tmp_path, monkeypatch) -> None:
    _fake_psutil(monkeypatch)
    logger = pl.loggers.CSVLogger(tmp_path, name="d")
    run = quiet_trainer(tmp_path, logger=logger, max_epochs=1, log_every_n_steps=2,
                        callbacks=[DeviceStatsMonitor()])  # fmt: skip
    run.fit(BoringModel(), boring_loader(32, batch_size=8))
    rows = list(csv.DictReader((tmp_path / "d" / "version_0" / "metrics.csv").open()))
    start = "DeviceStatsMonitor.on_train_batch_start/cpu_percent"
    assert [r["step"] for r in rows if r[start]] == ["1", "3"]
    assert {r[start] for r in rows if r[start]} == {"50.0"}


def test_device_stats_monitor_without_cpu_stats_or_logger(tmp_path, monkeypatch) -> None:
    _fake_psutil(monkeypatch)
    logger = pl.loggers.CSVLogger(tmp_path, name="d")
    run = quiet_trainer(tmp_path, logger=logger, max_epochs=1, log_every_n_steps=1,
                        callbacks=[DeviceStatsMonitor(cpu_stats=False)])  # fmt: skip
    run.fit(BoringModel(), boring_loader(16, batch_size=8))
    header = (tmp_path / "d" / "version_0" / "metrics.csv").read_text().splitlines()[0]
    assert "DeviceStatsMonitor" not in header
    run = quiet_trainer(tmp_path, logger=False, callbacks=[DeviceStatsMonitor()])
    with pytest.raises(MisconfigurationException, match="logger=False"):
        run.fit(BoringModel(), boring_loader(16, batch_size=8))
