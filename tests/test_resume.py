"""Exact resume: a run killed anywhere and resumed from last.ckpt ends as if never interrupted."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = str(Path(__file__).with_name("resume_script.py"))


def run(root: Path, kill: str = "none", resume_from: str | None = None) -> int:
    args = [sys.executable, SCRIPT, str(root), kill] + ([resume_from] if resume_from else [])
    done = subprocess.run(args, capture_output=True, text=True, timeout=120)
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
    assert run(tmp_path, kill) == -9
    last = tmp_path / "run" / "version_0" / "checkpoints" / "last.ckpt"
    assert last.is_file()
    assert not [p for p in last.parent.iterdir() if p.name.endswith(".tmp")]
    assert run(tmp_path, "none", str(last)) == 0

    expected = torch.load(reference / "final.pt", weights_only=True)
    resumed = torch.load(tmp_path / "final.pt", weights_only=True)
    assert expected.keys() == resumed.keys()
    for name in expected:
        assert torch.equal(expected[name], resumed[name]), name
    metrics = "run/version_0/metrics.csv"
    assert (tmp_path / metrics).read_text() == (reference / metrics).read_text()


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
