"""Exact resume: a run killed anywhere and resumed from last.ckpt ends as if never interrupted."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from boring import needs_cuda

SCRIPT = str(Path(__file__).with_name("resume_script.py"))


def run(root: Path, kill: str = "none", resume_from: str | None = None, **environment: str) -> int:
    """resume_script.py's exit code; `environment` sets RESUME_ACCELERATOR / RESUME_PRECISION."""
    args = [sys.executable, SCRIPT, str(root), kill] + ([resume_from] if resume_from else [])
    env = {**os.environ, **environment}
    done = subprocess.run(args, capture_output=True, text=True, timeout=120, env=env)
    if done.returncode not in (0, -9):
        raise AssertionError(done.stderr)
    return done.returncode


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    root = tmp_path_factory.mktemp("reference")
    assert run(root) == 0
    return root


@pytest.mark.slow
@pytest.mark.parametrize("kill", ["train:7", "train:16", "val:3", "ckpt:4", "ckpt:9"])
def test_killed_run_resumed_from_last_ckpt_matches_an_uninterrupted_run_bitwise(
    tmp_path, reference, kill
):
    kill_and_resume(tmp_path, kill)
    assert_same_run(reference, tmp_path)


GPU_FP16 = {"RESUME_ACCELERATOR": "cuda", "RESUME_PRECISION": "16-mixed"}


@pytest.fixture(scope="module")
def gpu_fp16_reference(tmp_path_factory):
    root = tmp_path_factory.mktemp("gpu_fp16_reference")
    assert run(root, **GPU_FP16) == 0
    return root


@pytest.mark.slow
@needs_cuda
@pytest.mark.parametrize("kill", ["train:7", "val:3", "ckpt:4"])
def test_16_mixed_gpu_run_resumes_bitwise_with_its_grad_scaler(tmp_path, gpu_fp16_reference, kill):
    kill_and_resume(tmp_path, kill, **GPU_FP16)
    assert_same_run(gpu_fp16_reference, tmp_path)
    last = torch.load(tmp_path / "run/version_0/checkpoints/last.ckpt", weights_only=True)
    # the scale and the count of steps since the last overflow, which a fresh scaler would reset
    assert {"scale", "_growth_tracker"} <= set(last["precision"]["scaler"])


def kill_and_resume(root: Path, kill: str, **environment: str) -> None:
    assert run(root, kill, **environment) == -9
    last = root / "run" / "version_0" / "checkpoints" / "last.ckpt"
    assert last.is_file()
    assert not [p for p in last.parent.iterdir() if p.name.endswith(".tmp")]
    assert run(root, "none", str(last), **environment) == 0


def assert_same_run(reference: Path, resumed_root: Path) -> None:
    """Weights, the precision's state and metrics.csv, bit for bit."""
    for file in ("final.pt", "precision.pt"):
        expected = torch.load(reference / file, weights_only=True)
        resumed = torch.load(resumed_root / file, weights_only=True)
        assert_equal_nested(expected, resumed, file)
    metrics = "run/version_0/metrics.csv"
    assert (resumed_root / metrics).read_text() == (reference / metrics).read_text()


def assert_equal_nested(expected: object, actual: object, where: str) -> None:
    if isinstance(expected, dict):
        assert isinstance(actual, dict) and expected.keys() == actual.keys(), where
        for key in expected:
            assert_equal_nested(expected[key], actual[key], f"{where}:{key}")
    elif isinstance(expected, torch.Tensor):
        assert torch.equal(expected, actual), where
    else:
        assert expected == actual, where


def test_fit_ckpt_path_last_finds_last_ckpt_in_the_loggers_version_folder(tmp_path):
    from boring import BoringModel, boring_loader, quiet_trainer

    import ltrain as pl

    def trainer(epochs: int) -> pl.Trainer:
        return quiet_trainer(
            tmp_path,
            max_epochs=epochs,
            logger=pl.loggers.CSVLogger(tmp_path, name="r", version=0),
            callbacks=[pl.callbacks.ModelCheckpoint(save_last=True)],
        )

    trainer(1).fit(BoringModel(), boring_loader())
    second = trainer(2)
    second.fit(BoringModel(), boring_loader(), ckpt_path="last")
    assert second.current_epoch == 2 and second.global_step == 16


def test_ckpt_path_last_with_nothing_saved_is_refused_without_claiming_a_folder(tmp_path):
    from boring import BoringModel, boring_loader, quiet_trainer

    import ltrain as pl

    trainer = quiet_trainer(tmp_path, max_epochs=1)
    with pytest.raises(pl.MisconfigurationException, match="no last checkpoint"):
        trainer.fit(BoringModel(), boring_loader(), ckpt_path="last")
    assert not (tmp_path / "lightning_logs").exists()


def test_resuming_from_a_foreign_checkpoint_names_what_is_missing(tmp_path):
    from boring import BoringModel, boring_loader, quiet_trainer

    import ltrain as pl

    foreign = tmp_path / "foreign.ckpt"
    torch.save({"state_dict": BoringModel().state_dict(), "optimizer_states": []}, foreign)
    with pytest.raises(
        pl.MisconfigurationException, match=r"cannot resume training .*no loops, rng"
    ):
        quiet_trainer(tmp_path, max_epochs=1).fit(
            BoringModel(), boring_loader(), ckpt_path=str(foreign)
        )


@pytest.mark.parametrize("accelerator", ["cpu", pytest.param("cuda", marks=needs_cuda)])
def test_a_resumed_run_keeps_adams_step_counts_on_the_host(tmp_path, accelerator):
    """Read back onto the GPU, a plain Adam's step counts would cost one sync per parameter and
    step (Adam reads them with .item()); the moments go next to their parameters."""
    from boring import BoringModel, boring_loader, quiet_trainer

    import ltrain as pl

    class AdamModel(BoringModel):
        def configure_optimizers(self):
            return torch.optim.Adam(self.parameters(), lr=0.01)

    def fit(epochs: int, ckpt_path: str | None = None) -> pl.Trainer:
        trainer = quiet_trainer(
            tmp_path,
            accelerator=accelerator,
            max_epochs=epochs,
            logger=pl.loggers.CSVLogger(tmp_path, name="r", version=0),
            callbacks=[pl.callbacks.ModelCheckpoint(save_last=True)],
        )
        trainer.fit(AdamModel(), boring_loader(), ckpt_path=ckpt_path)
        return trainer

    fit(1)
    resumed = fit(2, "last")
    states = list(resumed.optimizers[0].state.values())
    assert states and all(state["step"].device.type == "cpu" for state in states)
    assert all(state["exp_avg"].device.type == accelerator for state in states)
    assert resumed.global_step == 16


# ---------------------------------------------------------------------- resuming from Python
class _EpochLogger:
    """A module logging per epoch too (so a resume has an epoch row still to write)."""

    @staticmethod
    def make(calls: list[str]):
        from boring import BoringModel

        class Model(BoringModel):
            def training_step(self, batch, batch_idx):
                loss = super().training_step(batch, batch_idx)
                self.log("train_loss_mean", loss, on_step=False, on_epoch=True)
                return loss

            def configure_optimizers(self):
                calls.append("configure_optimizers")
                return super().configure_optimizers()

            def on_load_checkpoint(self, checkpoint):
                calls.append("module.on_load_checkpoint")

        return Model()


def _python_resume(tmp_path: Path, resumed_name: str) -> tuple[list[str], Path]:
    from boring import boring_loader, quiet_trainer

    import ltrain as pl

    calls: list[str] = []

    class Recorder(pl.Callback):
        def on_load_checkpoint(self, trainer, pl_module, checkpoint):
            calls.append("callback.on_load_checkpoint")

        def on_sanity_check_start(self, trainer, pl_module):
            calls.append("on_sanity_check_start")

    def trainer(epochs: int, name: str) -> pl.Trainer:
        return quiet_trainer(
            tmp_path,
            max_epochs=epochs,
            log_every_n_steps=1,
            logger=pl.loggers.CSVLogger(tmp_path, name=name),
            callbacks=[pl.callbacks.ModelCheckpoint(save_last=True), Recorder()],
        )

    first = trainer(1, "run")
    first.fit(_EpochLogger.make([]), boring_loader(), boring_loader(16))
    last = first.checkpoint_callback.last_model_path
    calls.clear()
    trainer(3, resumed_name).fit(
        _EpochLogger.make(calls), boring_loader(), boring_loader(16), ckpt_path=last
    )
    return calls, tmp_path


def _rows(path: Path) -> list[tuple[str, ...]]:
    """metrics.csv's rows: epoch, step, then the values in the file's column order."""
    import csv

    with open(path, newline="") as handle:
        return [
            (row.pop("epoch"), row.pop("step"), *row.values()) for row in csv.DictReader(handle)
        ]


def test_a_python_resume_loads_before_configure_optimizers_and_runs_the_sanity_check(tmp_path):
    calls, _ = _python_resume(tmp_path, "resumed")
    assert calls[:4] == [
        "module.on_load_checkpoint",
        "callback.on_load_checkpoint",
        "configure_optimizers",
        "on_sanity_check_start",
    ]


def test_a_python_resume_into_a_new_folder_repeats_no_row_of_the_first(tmp_path):
    _python_resume(tmp_path, "resumed")
    first = _rows(tmp_path / "run/version_0/metrics.csv")
    resumed = _rows(tmp_path / "resumed/version_0/metrics.csv")
    assert not {row[:2] for row in first} & {row[:2] for row in resumed}
    assert {row[0] for row in resumed} == {"1", "2"}


def test_a_python_resume_into_the_checkpoints_own_folder_continues_that_version(tmp_path):
    """ltrain's deliberate difference: Lightning would start version_1 (README, Differences)."""
    _python_resume(tmp_path, "run")
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["version_0"]
    rows = _rows(tmp_path / "run/version_0/metrics.csv")
    assert len(rows) == len(set(rows)) and {row[0] for row in rows} == {"0", "1", "2"}
