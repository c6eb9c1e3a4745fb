"""SIGINT / SIGTERM during `ltrain fit`: finish the step, save last.ckpt, say how to resume, exit 130/143."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

STOPPER = '''
import signal
import ltrain as pl

class SignalAt(pl.Callback):
    """Sends `signum` to this process after global step `step`."""

    def __init__(self, step: int, signum: int = 2):
        self.step, self.signum = step, signum

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step == self.step:
            # to this thread: a signal sent to the process may land on one of CUDA's threads,
            # and the main thread would see it some bytecodes later, past the loop's stop check
            signal.raise_signal(self.signum)
'''

CONFIG = {
    "name": "sig",
    "seed": 0,
    "model": {"class_path": "MLPClassifier", "init_args": {"in_features": 64, "lr": 0.01}},
    "data": {"class_path": "Digits", "init_args": {"batch_size": 64}},
    "trainer": {
        "max_epochs": 2,
        "limit_train_batches": 6,
        "limit_val_batches": 2,
        "log_every_n_steps": 2,
        "deterministic": True,
        "enable_progress_bar": False,
        "callbacks": [
            {"class_path": "stopper.SignalAt", "init_args": {"step": 4}},
            {"class_path": "ModelCheckpoint", "init_args": {"save_last": True}},
        ],
    },
}


def ltrain(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "ltrain", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture
def project(tmp_path):
    (tmp_path / "stopper.py").write_text(STOPPER)
    (tmp_path / "sig.yaml").write_text(yaml.safe_dump(CONFIG))
    return tmp_path


@pytest.mark.slow
@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_saves_last_ckpt_prints_the_resume_command_and_resumes_exactly(
    project, signum, code
):
    stopped = ltrain(
        project, "fit", "sig.yaml", "--set", f"trainer.callbacks.0.signum={int(signum)}"
    )
    assert stopped.returncode == code, stopped.stderr
    last = project / "runs" / "sig" / "version_0" / "checkpoints" / "last.ckpt"
    expected = (
        f"Resume with: ltrain fit sig.yaml --set trainer.callbacks.0.signum={int(signum)} "
        "--resume runs/sig/version_0/checkpoints/last.ckpt"
    )
    assert stopped.stderr.strip().splitlines()[-1] == expected
    assert "Traceback" not in stopped.stderr
    checkpoint = torch.load(last, weights_only=True)
    assert checkpoint["global_step"] == 4  # the step in progress was finished, no more

    resumed = ltrain(project, "fit", "sig.yaml", "--resume", str(last))
    assert resumed.returncode == 0, resumed.stderr
    ltrain(project, "fit", "sig.yaml", "--set", "trainer.callbacks.0.step=-1")  # uninterrupted
    runs = project / "runs" / "sig"
    interrupted = torch.load(runs / "version_0/checkpoints/last.ckpt", weights_only=True)
    reference = torch.load(runs / "version_1/checkpoints/last.ckpt", weights_only=True)
    assert interrupted["global_step"] == reference["global_step"] == 12
    for name, value in reference["state_dict"].items():
        assert torch.equal(interrupted["state_dict"][name], value), name
    assert (runs / "version_0/metrics.csv").read_text() == (
        runs / "version_1/metrics.csv"
    ).read_text()
    assert not os.path.exists(runs / "version_2")
