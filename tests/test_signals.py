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


PLAIN_SCRIPT = """
import signal, sys
import torch
import {framework} as pl


class Model(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Linear(4, 1)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return torch.nn.functional.mse_loss(self.layer(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


class SignalAt(pl.Callback):
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step == 3:
            signal.raise_signal(int(sys.argv[1]))


data = torch.utils.data.TensorDataset(torch.randn(32, 4), torch.randn(32, 1))
trainer = pl.Trainer(
    max_epochs=2, enable_progress_bar=False, enable_model_summary=False, accelerator="cpu",
    default_root_dir=".", callbacks=[SignalAt(), pl.callbacks.ModelCheckpoint(save_last=True)],
)
try:
    trainer.fit(Model(), torch.utils.data.DataLoader(data, batch_size=8))
finally:
    print("finally ran")
print("after fit")
"""


def plain_script(tmp_path: Path, framework: str, signum: int) -> subprocess.CompletedProcess:
    (tmp_path / "plain.py").write_text(PLAIN_SCRIPT.format(framework=framework))
    return subprocess.run(
        [sys.executable, "plain.py", str(int(signum))],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_ends_a_plain_script_as_an_interrupted_program(tmp_path, signum, code):
    """Status 128 + signal after last.ckpt, without a traceback; Lightning exits with 1
    (README, Differences from Lightning). `except KeyboardInterrupt` around fit catches it."""
    stopped = plain_script(tmp_path, "ltrain", signum)
    assert stopped.returncode == code, stopped.stderr
    assert "Traceback" not in stopped.stderr
    assert "finally ran" in stopped.stdout and "after fit" not in stopped.stdout
    last = tmp_path / "lightning_logs/version_0/checkpoints/last.ckpt"
    assert torch.load(last, weights_only=True)["global_step"] == 3


@pytest.mark.slow
def test_lightning_ends_a_plain_script_interrupted_by_sigint_with_status_1(tmp_path):
    """What ltrain's 130 differs from (the test above)."""
    pytest.importorskip("lightning")
    stopped = plain_script(tmp_path, "lightning.pytorch", signal.SIGINT)
    assert stopped.returncode == 1, stopped.stderr


def test_run_interrupted_is_a_keyboard_interrupt_for_the_code_around_fit():
    from ltrain.errors import RunInterrupted

    with pytest.raises(KeyboardInterrupt) as caught:
        raise RunInterrupted(signal.SIGTERM, "last.ckpt")
    assert caught.value.code == 143 and caught.value.checkpoint == "last.ckpt"
