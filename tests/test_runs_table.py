"""`run.json` in every CLI version folder, and the `ltrain runs` table built from the folders."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
from boring import BoringModel, boring_loader, quiet_trainer
from tiny_runs import FAIL_AT_4, INTERRUPT_AT_4, invoke, run_json, write_project

from ltrain.app.runs_table import render, runs_frame, sort_frame, version_folders
from ltrain.loggers import CSVLogger
from ltrain.run_record import git_state


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """runs/tiny: version_0 finished, version_1 failed (lr changed), version_2 interrupted."""
    project = tmp_path_factory.mktemp("project")
    write_project(project)
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(project)
        results = [
            invoke("fit", "tiny.yaml"),
            invoke("fit", "tiny.yaml", "--set", "model.lr=0.003", *FAIL_AT_4),
            invoke("fit", "tiny.yaml", *INTERRUPT_AT_4),
        ]
    assert [r.exit_code for r in results] == [0, 1, 1], [r.output for r in results]
    assert "boom at step 4" in str(results[1].exception)
    return project / "runs"


def table(*args: str, cwd: Path) -> pd.DataFrame:
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(cwd)
        result = invoke("runs", *args, "--csv")
    assert result.exit_code == 0, result.output
    return pd.read_csv(io.StringIO(result.stdout))


def valid_losses(folder: Path) -> pd.Series:
    return pd.read_csv(folder / "metrics.csv")["valid_loss"].dropna()


def test_runs_table_shows_finished_failed_and_interrupted_runs_with_their_best_metric(runs):
    frame = table(cwd=runs.parent)
    assert list(frame["version"]) == [0, 1, 2]
    assert list(frame["state"]) == ["finished", "failed", "interrupted"]
    assert list(frame["epochs"]) == [2, 1, 1]
    for version, best in zip(frame["version"], frame["best"], strict=True):
        assert best == pytest.approx(valid_losses(runs / "tiny" / f"version_{version}").min())
    assert set(frame["monitor"]) == {"valid_loss"}
    assert frame["message"][1] == "RuntimeError: boom at step 4"
    assert frame["message"][2] == "boom at step 4"
    assert frame["changes"][1].startswith("model.lr: 0.01→0.003, trainer.callbacks.1.step: -1→4")
    last = pd.read_csv(runs / "tiny" / "version_0" / "metrics.csv")
    assert frame["train_loss"][0] == pytest.approx(last["train_loss_epoch"].dropna().iloc[-1])
    assert frame["valid_acc"][0] == pytest.approx(last["valid_acc"].dropna().iloc[-1])


def test_run_json_records_the_command_its_end_and_the_best_checkpoint(runs):
    finished = run_json(runs / "tiny" / "version_0")
    assert finished["state"] == "finished"
    assert finished["command_line"].endswith("fit tiny.yaml")
    assert finished["started"] <= finished["ended"] and finished["duration_s"] > 0
    assert (finished["epochs"], finished["global_step"]) == (2, 6)
    auto_device = "cuda:0" if torch.cuda.is_available() else "cpu"  # the config says auto
    assert finished["device"] == auto_device and finished["precision"] == "32-true"
    assert set(finished["versions"]) == {"ltrain", "torch", "python"}
    assert finished["git"] is None  # the project folder is not a git work tree
    best = Path(finished["best_model_path"])
    assert best.parent == Path("runs/tiny/version_0/checkpoints") and (runs.parent / best).is_file()
    assert finished["best_model_score"] == pytest.approx(
        valid_losses(runs / "tiny" / "version_0").min()
    )
    failed = run_json(runs / "tiny" / "version_1")
    assert (failed["state"], failed["epochs"], failed["global_step"]) == ("failed", 1, 4)


def test_terminal_table_fits_80_columns_and_wider_shows_more(runs):
    frame = sort_frame(runs_frame(version_folders(runs)), None)
    narrow = render(frame, width=80)
    assert narrow.splitlines()[0] == "best: lowest valid_loss"
    header = narrow.splitlines()[1].split()
    assert header[:6] == ["name", "v", "state", "ep", "time", "best"]
    assert all(len(line) <= 80 for line in narrow.splitlines())
    assert "interrupted" in narrow and "model.lr: 0.01→0.003" in narrow
    wide = render(frame, width=200)
    assert "message" in wide.splitlines()[1] and "RuntimeError: boom at step 4" in wide
    assert len(wide.splitlines()[1].split()) > len(header)


def test_sort_by_a_metric_and_reversed(runs):
    by_loss = table("--sort", "valid_loss", cwd=runs.parent)
    assert list(by_loss["valid_loss"]) == sorted(by_loss["valid_loss"])
    reverse = table("--sort", "-valid_loss", cwd=runs.parent)
    assert list(reverse["version"]) == list(by_loss["version"])[::-1]
    by_state = table("runs", "--sort", "state", cwd=runs.parent)
    assert list(by_state["state"]) == ["failed", "finished", "interrupted"]


def test_test_command_rows_show_their_command_and_no_epochs(runs, tmp_path, monkeypatch):
    shutil.copytree(runs, tmp_path / "runs")
    monkeypatch.chdir(tmp_path)
    result = invoke("test", "--ckpt", "runs/tiny/version_0")
    assert result.exit_code == 0, result.output
    frame = runs_frame(version_folders(tmp_path / "runs"))
    row = frame.iloc[-1]
    assert (row["version"], row["command"], row["state"]) == (3, "test", "finished")
    assert row["epochs"] is pd.NA
    # its config is version_0's (from the checkpoint); version_2 before it had the interruption
    assert row["changes"] == (
        "trainer.callbacks.1.step: 4→-1, trainer.callbacks.1.error: KeyboardInterrupt→RuntimeError"
    )
    header = render(frame, width=80).splitlines()[1].split()
    assert header[:4] == ["name", "v", "cmd", "state"]


def test_a_version_folder_a_run_folder_and_name_patterns_select_rows(runs):
    assert list(table("runs/tiny/version_1", cwd=runs.parent)["version"]) == [1]
    assert list(table("runs/tiny", cwd=runs.parent)["version"]) == [0, 1, 2]
    assert list(table("--name", "ti*", cwd=runs.parent)["version"]) == [0, 1, 2]


def test_resumed_run_keeps_its_interrupted_record_under_previous(tmp_path, monkeypatch):
    monkeypatch.chdir(write_project(tmp_path).parent)
    assert invoke("fit", "tiny.yaml", *INTERRUPT_AT_4).exit_code == 1
    folder = tmp_path / "runs" / "tiny" / "version_0"
    first = run_json(folder)
    resumed = invoke("fit", "tiny.yaml", "--resume", str(folder / "checkpoints" / "last.ckpt"))
    assert resumed.exit_code == 0, resumed.output
    record = run_json(folder)
    assert record["state"] == "finished" and record["epochs"] == 2
    assert record["checkpoint"].endswith("last.ckpt")
    assert [p["state"] for p in record["previous"]] == ["interrupted"]
    assert record["previous"][0]["started"] == first["started"]
    frame = runs_frame([folder])
    assert frame["duration_s"][0] == pytest.approx(first["duration_s"] + record["duration_s"])


def test_run_whose_process_is_gone_shows_as_died_and_a_live_one_as_running(runs, tmp_path):
    folder = tmp_path / "runs" / "tiny" / "version_0"
    shutil.copytree(runs / "tiny" / "version_0", folder)
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    record = run_json(folder)
    for pid, state in ((gone.pid, "died"), (os.getpid(), "running")):
        record.update(state="running", ended=None, duration_s=None, epochs=None, pid=pid)
        (folder / "run.json").write_text(json.dumps(record))
        row = runs_frame([folder]).iloc[0]
        assert row["state"] == state
        assert row["epochs"] == 2  # from metrics.csv while run.json has no end


def test_folders_without_run_json_are_listed_with_inferred_state(runs, tmp_path):
    old = tmp_path / "runs" / "tiny" / "version_0"
    shutil.copytree(runs / "tiny" / "version_0", old)
    (old / "run.json").unlink()
    model = BoringModel()
    logger = CSVLogger(tmp_path / "runs", name="python")
    trainer = quiet_trainer(tmp_path, max_epochs=2, logger=logger, log_every_n_steps=2)
    trainer.fit(model, boring_loader(), boring_loader())
    assert run_json(Path(logger.log_dir))["state"] == "finished"  # a Python fit records too
    (Path(logger.log_dir) / "run.json").unlink()
    frame = runs_frame(version_folders(tmp_path / "runs"))
    rows = frame.set_index("name")
    assert rows.loc["tiny", "state"] == "finished"  # max_epochs reached, says its config.yaml
    assert rows.loc["tiny", "best"] == pytest.approx(valid_losses(old).min())
    assert rows.loc["python", "state"] == "unknown"  # no config.yaml to compare epochs with
    assert rows.loc["python", "epochs"] == 2
    assert rows.loc["python", "valid_loss"] == pytest.approx(
        valid_losses(Path(logger.log_dir)).iloc[-1]
    )


def test_failed_start_leaves_no_folder_and_no_run_json(tmp_path, monkeypatch):
    monkeypatch.chdir(write_project(tmp_path).parent)
    (tmp_path / "empty").mkdir()
    result = invoke(
        "fit",
        "tiny.yaml",
        *("--set", "data.class_path=MNIST", "--set", "data.root=empty"),
        *("--set", "model.in_features=784"),
    )
    assert result.exit_code == 2 and "MNIST" in result.stderr
    assert not list((tmp_path / "runs").rglob("version_*"))


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_git_state_names_the_commit_and_whether_tracked_files_changed(tmp_path):
    assert git_state(str(tmp_path)) is None

    def git(*args: str) -> str:
        done = subprocess.run(
            ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            check=True,
        )
        return done.stdout.strip()

    git("init", "-q")
    (tmp_path / "a.txt").write_text("a")
    git("add", "a.txt")
    git("commit", "-q", "-m", "a")
    assert git_state(str(tmp_path)) == {"commit": git("rev-parse", "HEAD"), "dirty": False}
    (tmp_path / "a.txt").write_text("b")
    assert git_state(str(tmp_path))["dirty"] is True


@pytest.mark.slow
def test_sigint_records_interrupted_with_the_checkpoint_it_saved(tmp_path):
    write_project(tmp_path)
    sigint = ("--set", "trainer.callbacks.1.error=SIGINT")
    done = subprocess.run(
        [sys.executable, "-m", "ltrain", "fit", "tiny.yaml", *FAIL_AT_4, *sigint],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 130, done.stderr
    record = run_json(tmp_path / "runs" / "tiny" / "version_0")
    assert record["state"] == "interrupted"
    assert record["message"] == "SIGINT: saved runs/tiny/version_0/checkpoints/last.ckpt"
    assert record["global_step"] == 4


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["nowhere"], ["nowhere", "no such runs folder"]),
        (["tiny.yaml"], ["tiny.yaml", "not a folder"]),
        (["--name", "other"], ["--name other", "runs there: tiny"]),
        (["--sort", "bogus"], ["--sort bogus", "valid:", "duration", "valid_loss"]),
    ],
)
def test_bad_runs_input_is_one_line_exit_2(runs, args, words):
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(runs.parent)
        result = invoke("runs", *args)
    assert result.exit_code == 2
    errors = result.stderr.strip().splitlines()
    assert len(errors) == 1 and "Traceback" not in result.output
    for word in words:
        assert word in errors[0], errors[0]
