"""Trainer arguments of issue 15: detect_anomaly, barebones, plugins, profiler,
reload_dataloaders_every_n_epochs, use_distributed_sampler (2 CPU processes) and sync_batchnorm.

The call order of the reloads and barebones' effect on a fit are checked against Lightning in the
parity suite (tests/parity/scenarios.py, "issue 15: trainer").
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from boring import BoringModel, boring_loader, quiet_trainer
from torch.utils.data import DataLoader

import ltrain as pl
from ltrain.errors import MisconfigurationException

pytestmark = pytest.mark.filterwarnings("ignore:You defined a validation_step:UserWarning")


class NaNBackward(BoringModel):
    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, _ = batch
        return torch.sqrt(self(x) - 1e6).sum()  # sqrt of a negative number: nan in backward


def test_detect_anomaly_names_the_forward_op_of_a_nan_gradient(tmp_path):
    trainer = quiet_trainer(tmp_path, max_epochs=1, logger=False, detect_anomaly=True)
    with pytest.raises(RuntimeError, match="SqrtBackward0"), pytest.warns(UserWarning):
        trainer.fit(NaNBackward(), boring_loader(16, 8))
    assert not torch.is_anomaly_enabled()  # switched off again after the fit


def test_reload_dataloaders_every_n_epochs_must_be_an_int(tmp_path):
    with pytest.raises(MisconfigurationException, match=r"reload_dataloaders_every_n_epochs=-1"):
        quiet_trainer(tmp_path, reload_dataloaders_every_n_epochs=-1)


@pytest.mark.parametrize(
    "given",
    [
        {"logger": True},
        {"enable_checkpointing": True},
        {"enable_progress_bar": True},
        {"enable_model_summary": True},
        {"log_every_n_steps": 5},
        {"num_sanity_val_steps": 2},
        {"fast_dev_run": True},
        {"detect_anomaly": True},
        {"profiler": "simple"},
    ],
)
def test_barebones_refuses_what_it_turns_off(tmp_path, given):
    ((name, value),) = given.items()
    message = (
        rf"`Trainer\(barebones=True, {name}={value!r}\)` was passed\. .* disabled in barebones"
    )
    with pytest.raises(MisconfigurationException, match=message):
        pl.Trainer(barebones=True, default_root_dir=tmp_path, **given)


def test_barebones_fit_logs_nothing_and_keeps_no_callbacks(tmp_path):
    trainer = pl.Trainer(barebones=True, default_root_dir=tmp_path, max_epochs=1)
    assert trainer.loggers == [] and trainer.callbacks == []
    with pytest.warns(UserWarning, match=r"self.log\('train_loss'\): `Trainer\(barebones=True\)`"):
        trainer.fit(BoringModel(), boring_loader(16, 8))
    assert trainer.callback_metrics == {} and trainer.global_step == 2
    assert list(tmp_path.iterdir()) == []  # no folder, no file


@pytest.mark.parametrize("plugins", ["bf16-mixed", [object()]])
def test_plugins_are_refused_with_what_was_given(tmp_path, plugins):
    with pytest.raises(MisconfigurationException, match=r"plugins=\[.*\]: ltrain supports no"):
        quiet_trainer(tmp_path, plugins=plugins)
    quiet_trainer(tmp_path, plugins=[])  # empty: nothing asked for


# `python script.py ROOT USE_SAMPLER`: 2 CPU processes; each rank writes the samples it read
SCRIPT = """
import json, sys
import torch
from torch.utils.data import DataLoader
import ltrain as pl

class Net(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Linear(1, 1)
        self.seen = []

    def training_step(self, batch, batch_idx):
        self.seen += batch.flatten().int().tolist()
        return self.layer(batch.float().unsqueeze(1)).sum()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)

root, use_sampler = sys.argv[1], sys.argv[2] == "1"
trainer = pl.Trainer(accelerator="cpu", strategy="ddp", devices=2, max_epochs=1, logger=False,
                     enable_checkpointing=False, enable_progress_bar=False,
                     enable_model_summary=False, use_distributed_sampler=use_sampler)
model = Net()
trainer.fit(model, DataLoader(torch.arange(8), batch_size=2))
with open(f"{root}/rank{trainer.global_rank}.json", "w") as f:
    json.dump(model.seen, f)
"""


@pytest.mark.slow
@pytest.mark.parametrize("use_sampler", [True, False])
def test_ddp_without_distributed_sampler_reads_the_loader_as_given(
    tmp_path: Path, use_sampler: bool
) -> None:
    script = tmp_path / "train.py"
    script.write_text(SCRIPT)
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    done = subprocess.run(
        [sys.executable, str(script), str(tmp_path), str(int(use_sampler))],
        capture_output=True, text=True, timeout=240, env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    if use_sampler:  # each rank reads its half
        assert sorted(ranks[0] + ranks[1]) == list(range(8)) and len(ranks[0]) == 4
    else:  # the loader as given: every rank reads all of it
        assert ranks[0] == ranks[1] == list(range(8))


def test_sync_batchnorm_needs_cuda_under_ddp(tmp_path):
    with pytest.raises(MisconfigurationException, match="sync_batchnorm=True needs CUDA devices"):
        quiet_trainer(tmp_path, strategy="ddp", devices=2, sync_batchnorm=True)


def test_sync_batchnorm_on_one_process_changes_nothing(tmp_path):
    class WithNorm(BoringModel):
        def __init__(self) -> None:
            super().__init__()
            self.norm = torch.nn.BatchNorm1d(4)

    model = WithNorm()
    quiet_trainer(tmp_path, max_epochs=1, logger=False, sync_batchnorm=True).fit(
        model, DataLoader(list(zip(torch.randn(8, 4), torch.randn(8, 1), strict=True)))
    )
    assert type(model.norm) is torch.nn.BatchNorm1d


class TimedStep(BoringModel):
    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        with self.trainer.profiler.profile("my_action"):  # user code times its own actions
            return super().training_step(batch, batch_idx)


def _report_rows(report: str) -> dict[str, list[str]]:
    rows = [line.split("|")[1:-1] for line in report.splitlines() if line.startswith("|  ")]
    return {cells[0].strip(): [c.strip() for c in cells[1:]] for cells in rows}


def test_simple_profiler_prints_and_writes_the_time_per_action(tmp_path, capsys):
    trainer = quiet_trainer(tmp_path, max_epochs=2, profiler="simple")
    trainer.fit(TimedStep(), boring_loader(32, 8))
    printed = capsys.readouterr().out
    written = (Path(trainer.log_dir) / "fit-profiler.txt").read_text()
    assert "FIT Profiler Report" in printed and written.strip() in printed
    rows = _report_rows(written)
    assert list(rows)[0] == "Action"
    assert rows["Action"] == ["Mean duration (s)", "Num calls", "Total time (s)", "Percentage %"]
    assert rows["my_action"][1] == "8" and rows["run_training_epoch"][1] == "2"
    assert rows["run_training_batch"][1] == "8"
    assert rows["[Callback]ModelCheckpoint.on_train_epoch_end"][1] == "2"


def test_a_profiler_with_a_filename_writes_lightnings_file_per_stage(tmp_path, capsys):
    profiler = pl.profilers.SimpleProfiler(dirpath=tmp_path / "perf", filename="logs")
    trainer = quiet_trainer(tmp_path, max_epochs=1, profiler=profiler, logger=False)
    trainer.fit(TimedStep(), boring_loader(16, 8), boring_loader(16, 8))
    trainer.validate(TimedStep(), boring_loader(16, 8), verbose=False)
    assert sorted(p.name for p in (tmp_path / "perf").iterdir()) == [
        "fit-logs.txt",
        "validate-logs.txt",
    ]
    validate = _report_rows((tmp_path / "perf" / "validate-logs.txt").read_text())
    assert "my_action" not in validate  # each run reports its own actions
    assert "Profiler Report" not in capsys.readouterr().out


def test_an_unknown_profiler_is_named_with_the_supported_ones(tmp_path):
    with pytest.raises(
        MisconfigurationException,
        match=r"profiler='fancy': supported are None, 'simple', 'advanced', 'pytorch'",
    ):
        quiet_trainer(tmp_path, profiler="fancy")
