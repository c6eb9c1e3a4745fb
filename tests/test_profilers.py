"""`profiler="advanced"` (cProfile per action) and `profiler="pytorch"` (torch.profiler, a
Chrome trace): the report printed and written to the run folder, the trace a valid Chrome trace
with the actions as named ranges."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from boring import BoringModel, boring_loader, quiet_trainer

import ltrain as pl


def _fit(tmp_path: Path, profiler: object) -> pl.Trainer:
    trainer = quiet_trainer(tmp_path, max_epochs=1, logger=False, profiler=profiler)
    trainer.fit(BoringModel(), boring_loader(samples=16), boring_loader(samples=8))
    return trainer


def test_advanced_profiler_reports_cprofile_stats_per_action(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    trainer = _fit(tmp_path, "advanced")
    assert isinstance(trainer.profiler, pl.profilers.AdvancedProfiler)
    out = capsys.readouterr().out
    report = (tmp_path / "fit-profiler.txt").read_text()
    assert report.startswith("FIT Profiler Report") and report.strip() in out
    assert "Profile stats for: run_training_batch" in report
    assert "Profile stats for: [LightningModule]BoringModel.on_validation_model_eval" in report
    # the batch's own work, not the hooks nested in it: training_step's call is in its table
    batch = report.split("Profile stats for: run_training_batch")[1].split("Profile stats for")[0]
    assert "training_step" in batch and "ncalls" in batch


def test_advanced_profiler_dumps_stats_under_a_filename(tmp_path: Path) -> None:
    profiler = pl.profilers.AdvancedProfiler(dirpath=tmp_path / "perf", filename="adv",
                                             line_count_restriction=5, dump_stats=True)  # fmt: skip
    _fit(tmp_path, profiler)
    names = {p.name for p in (tmp_path / "perf").iterdir()}
    assert {"fit-adv.txt", "fit-adv-run_training_batch.prof"} <= names


def test_pytorch_profiler_prints_a_table_and_writes_a_chrome_trace(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    trainer = _fit(tmp_path, "pytorch")
    assert isinstance(trainer.profiler, pl.profilers.PyTorchProfiler)
    out = capsys.readouterr().out
    assert "FIT Profiler Report" in out and "CPU total" in out and "aten::" in out
    assert (tmp_path / "fit-profiler.txt").read_text().startswith("FIT Profiler Report")
    trace = json.loads((tmp_path / "fit-profiler.pt.trace.json").read_text())
    ranges = {
        event["name"] for event in trace["traceEvents"] if event.get("cat") == "user_annotation"
    }
    assert {"run_training_epoch", "run_training_batch"} <= ranges
    assert "[LightningModule]BoringModel.on_validation_model_eval" in ranges


def test_pytorch_profiler_schedule_steps_with_training_batches(tmp_path: Path) -> None:
    schedule = torch.profiler.schedule(wait=0, warmup=1, active=1)
    trainer = _fit(tmp_path, pl.profilers.PyTorchProfiler(schedule=schedule))
    trace = json.loads((tmp_path / "fit-profiler.pt.trace.json").read_text())
    batches = [e for e in trace["traceEvents"] if e.get("name") == "run_training_batch"]
    assert len(batches) == 1  # of the two batches, the second: one warmup, one active
    trainer.validate(BoringModel(), boring_loader(samples=8))  # no training batch: nothing active
    assert not (tmp_path / "validate-profiler.txt").exists()
