"""The `ltrain` commands end to end: fit, validate, test, predict, config, and every bad input."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml
from click.testing import CliRunner

from ltrain.app.cli import main

TINY = {
    "name": "tiny",
    "seed": 0,
    "model": {"class_path": "MLPClassifier", "init_args": {"in_features": 64, "lr": 0.01}},
    "data": {"class_path": "Digits", "init_args": {"batch_size": 64}},
    "trainer": {
        "max_epochs": 2,
        "limit_train_batches": 4,
        "limit_val_batches": 2,
        "limit_test_batches": 2,
        "limit_predict_batches": 2,
        "log_every_n_steps": 2,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "callbacks": [
            {
                "class_path": "ModelCheckpoint",
                "init_args": {"monitor": "valid_loss", "save_last": True},
            }
        ],
    },
}


def invoke(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(TINY))
    return tmp_path


@pytest.fixture
def trained(workdir):
    result = invoke("fit", "tiny.yaml")
    assert result.exit_code == 0, result.output
    return workdir / "runs" / "tiny" / "version_0"


def test_fit_writes_config_metrics_and_checkpoints_into_one_version_folder(trained):
    files = sorted(p.name for p in trained.iterdir())
    assert files == ["checkpoints", "config.yaml", "hparams.yaml", "metrics.csv", "run.json"]
    config_text = (trained / "config.yaml").read_text()
    assert config_text.startswith("# ")  # the command line
    assert yaml.safe_load(config_text)["model"]["init_args"]["lr"] == 0.01
    metrics = pd.read_csv(trained / "metrics.csv")
    assert metrics["valid_loss"].notna().sum() == 2
    checkpoints = sorted(p.name for p in (trained / "checkpoints").iterdir())
    assert "last.ckpt" in checkpoints and len(checkpoints) == 2


def test_set_overrides_reach_the_run(workdir):
    result = invoke("fit", "tiny.yaml", "--set", "trainer.max_epochs=1", "--set", "model.lr=1e-3")
    assert result.exit_code == 0, result.output
    saved = yaml.safe_load(Path("runs/tiny/version_0/config.yaml").read_text())
    assert saved["trainer"]["max_epochs"] == 1
    assert saved["model"]["init_args"]["lr"] == 1e-3
    assert "Run folder: runs/tiny/version_0" in result.output


def test_final_metrics_show_every_name_once_even_one_that_starts_with_another(workdir):
    (workdir / "kl.py").write_text(
        "from ltrain.zoo import MLPClassifier\n"
        "class WithKL(MLPClassifier):\n"
        "    def training_step(self, batch, batch_idx):\n"
        "        loss = super().training_step(batch, batch_idx)\n"
        "        self.log_dict({'loss': loss, 'loss_kl': loss * 0 + 0.5})\n"
        "        self.log('acc', 0.25, on_step=True, on_epoch=True)\n"
        "        return loss\n"
    )
    result = invoke("fit", "tiny.yaml", "--set", "model.class_path=kl.WithKL")
    assert result.exit_code == 0, result.output
    summary = result.output.split("Final metrics:\n")[1].split("Done:")[0]
    names = [line.split()[0] for line in summary.splitlines()]
    # acc_step and acc_epoch repeat acc (its epoch value); loss_kl is a metric of its own
    assert {"loss", "loss_kl", "acc", "train_loss", "valid_loss"} <= set(names)
    assert "acc_step" not in names and "acc_epoch" not in names
    assert len(names) == len(set(names))


def test_test_and_predict_need_only_the_checkpoint_and_write_new_folders(trained):
    result = invoke("test", "--ckpt", str(trained))
    assert result.exit_code == 0, result.output
    assert "Test metric" in result.output and "test_acc" in result.output
    assert "it imports: ltrain.zoo.classifier" in result.output
    test_folder = trained.parent / "version_1"
    assert "checkpoint: " in (test_folder / "config.yaml").read_text()
    assert pd.read_csv(test_folder / "metrics.csv")["test_acc"].notna().sum() == 1

    result = invoke("predict", "--ckpt", str(trained / "checkpoints" / "last.ckpt"))
    assert result.exit_code == 0, result.output
    predictions = pd.read_csv(trained.parent / "version_2" / "predictions.csv")
    assert list(predictions.columns) == ["index", "prediction"]
    assert len(predictions) == 128  # 2 batches of 64
    assert sorted(p.name for p in trained.iterdir()) == [
        "checkpoints",
        "config.yaml",
        "hparams.yaml",
        "metrics.csv",
        "run.json",
    ]  # the training run's folder is left alone


def test_predict_out_chooses_the_file(trained, workdir):
    result = invoke("predict", "--ckpt", str(trained), "--out", "p.pt")
    assert result.exit_code == 0, result.output
    loaded = torch.load(workdir / "p.pt", weights_only=True)
    assert len(loaded) == 2 and loaded[0].shape == (64,)


def test_validate_with_config_and_version_folder(trained):
    result = invoke("validate", "tiny.yaml", "--ckpt", str(trained))
    assert result.exit_code == 0, result.output
    assert "Validate metric" in result.output


def test_resume_last_continues_in_the_same_folder(trained):
    result = invoke("fit", "tiny.yaml", "--set", "trainer.max_epochs=3", "--resume", "last")
    assert result.exit_code == 0, result.output
    metrics = pd.read_csv(trained / "metrics.csv")
    assert sorted(metrics["epoch"].unique()) == [0, 1, 2]
    assert not (trained.parent / "version_1").exists()


@pytest.mark.parametrize("folder", ["some/dir", "foo_7"])
def test_resume_from_a_checkpoint_outside_a_run_folder_continues_in_a_new_version_folder(
    trained, workdir, folder
):
    checkpoint = workdir / folder / "x.ckpt"
    checkpoint.parent.mkdir(parents=True)
    shutil.copy(trained / "checkpoints" / "last.ckpt", checkpoint)
    result = invoke(
        "fit", "tiny.yaml", "--set", "trainer.max_epochs=3", "--resume", str(checkpoint)
    )
    assert result.exit_code == 0, result.output
    assert [p.name for p in checkpoint.parent.iterdir()] == ["x.ckpt"]  # nothing written there
    new = trained.parent / "version_1"
    assert {"config.yaml", "run.json", "metrics.csv"} <= {p.name for p in new.iterdir()}
    assert json.loads((new / "run.json").read_text())["checkpoint"] == str(checkpoint)
    epochs = set(pd.read_csv(new / "metrics.csv")["epoch"])
    assert 0 not in epochs and max(epochs) == 2  # resumed where the checkpoint was, not anew
    assert not (workdir.parent / "tiny").exists()  # no logger writes beside the work folder


def test_resume_from_another_runs_checkpoint_continues_in_that_runs_folder(trained, workdir):
    (workdir / "renamed.yaml").write_text(yaml.safe_dump({**TINY, "name": "renamed"}))
    last = trained / "checkpoints" / "last.ckpt"
    result = invoke("fit", "renamed.yaml", "--set", "trainer.max_epochs=3", "--resume", str(last))
    assert result.exit_code == 0, result.output
    assert sorted(pd.read_csv(trained / "metrics.csv")["epoch"].unique()) == [0, 1, 2]
    assert not (workdir / "runs" / "renamed").exists()


def test_a_folder_without_a_last_or_best_checkpoint_gives_its_newest(trained):
    folder = trained.parent / "version_5" / "checkpoints"
    folder.mkdir(parents=True)
    for name, mtime in (("a.ckpt", 2_000_000_000), ("b.ckpt", 1_000_000_000)):  # a is newer
        shutil.copy(trained / "checkpoints" / "last.ckpt", folder / name)
        os.utime(folder / name, (mtime, mtime))
    tested = invoke("test", "--ckpt", str(folder.parent))
    assert f"Using the config stored in {folder / 'a.ckpt'};" in tested.output
    resumed = invoke("fit", "tiny.yaml", "--set", "trainer.max_epochs=3", "--resume", "last")
    assert resumed.exit_code == 0, resumed.output
    run = json.loads((folder.parent / "run.json").read_text())
    assert run["checkpoint"].endswith("version_5/checkpoints/a.ckpt")


def test_config_command_prints_yaml_that_feeds_back_unchanged(workdir):
    first = invoke("config", "tiny.yaml", "--set", "trainer.max_epochs=7")
    assert first.exit_code == 0
    Path("resolved.yaml").write_text(first.output)
    second = invoke("config", "resolved.yaml")
    assert second.output == first.output
    assert yaml.safe_load(first.output)["trainer"]["max_epochs"] == 7
    assert not Path("runs").exists()


BROKEN = [
    # (files to write, arguments, words the one-line message must contain)
    ({}, ["fit", "missing.yaml"], ["missing.yaml", "no such config file"]),
    ({"c.yaml": "model: [1, 2\n"}, ["fit", "c.yaml"], ["c.yaml", "line", "YAML syntax error"]),
    ({"c.yaml": "- 1\n- 2\n"}, ["fit", "c.yaml"], ["c.yaml", "top level must be a mapping"]),
    ({}, ["fit", "tiny.yaml", "--set", "modle.lr=1"], ["modle", "did you mean 'model'"]),
    ({}, ["fit", "tiny.yaml", "--set", "trainer.max_epoch=3"], ["trainer.max_epoch", "max_epochs"]),
    ({}, ["fit", "tiny.yaml", "--set", "model.lr=fast"], ["model.init_args.lr", "expected float"]),
    ({}, ["fit", "tiny.yaml", "--set", "trainer.max_epochs=three"], ["trainer.max_epochs", "int"]),
    (
        {},
        ["fit", "tiny.yaml", "--set", "model.class_path=nosuchmod.Net"],
        ["model.class_path", "nosuchmod"],
    ),
    (
        {},
        ["fit", "tiny.yaml", "--set", "model.class_path=ltrain.zoo.Nope"],
        ["ltrain.zoo", "'Nope'"],
    ),
    (
        {},
        ["fit", "tiny.yaml", "--set", "model.class_path=torch.nn.Linear"],
        ["model.class_path", "Module"],
    ),
    (
        {},
        ["fit", "tiny.yaml", "--set", "data.class_path=MLPClassifier"],
        ["data.class_path", "DataModule"],
    ),
    (
        {},
        ["fit", "tiny.yaml", "--set", "trainer.callbacks.0.class_path=Digits"],
        ["trainer.callbacks.0.class_path", "Callback"],
    ),
    ({}, ["fit", "tiny.yaml", "--set", "trainer.max_epochs"], ["trainer.max_epochs", "KEY=VALUE"]),
    ({}, ["fit", "tiny.yaml", "--set", "=3"], ["empty key"]),
    (
        {},
        ["fit", "tiny.yaml", "--set", "trainer.callbacks.4.patience=1"],
        ["list index out of range"],
    ),
    (
        {},
        ["fit", "tiny.yaml", "--set", "model.hidden=3"],
        ["model.init_args.hidden", "unknown key"],
    ),
    ({}, ["fit", "tiny.yaml", "--set", "trainer.precision=bogus"], ["precision", "bf16-mixed"]),
    (
        {},
        [
            "fit",
            "tiny.yaml",
            "--set",
            "trainer.accelerator=cpu",
            "--set",
            "trainer.precision=16-mixed",
        ],
        ["16-mixed", "CUDA"],
    ),
    ({}, ["fit", "tiny.yaml", "--set", "name=a/b"], ["name", "folder name"]),
    ({}, ["fit", "tiny.yaml", "--set", "model=Perceptron"], ["model.class_path", "Perceptron"]),
    (
        {"ic.yaml": "model: {class_path: ImageClassifier}\n"},
        ["fit", "ic.yaml"],
        ["backbone", "required"],
    ),
    ({}, ["fit", "tiny.yaml", "--set", "trainer=[1]"], ["trainer", "mapping"]),
    ({"empty.yaml": "name: x\n"}, ["fit", "empty.yaml"], ["model", "missing"]),
    ({}, ["fit"], ["CONFIG"]),
    ({}, ["test"], ["--ckpt"]),
    ({}, ["predict", "tiny.yaml"], ["--ckpt"]),
    ({}, ["test", "--ckpt", "nope.ckpt"], ["nope.ckpt", "no such file"]),
    (
        {"junk.ckpt": "not a checkpoint"},
        ["test", "--ckpt", "junk.ckpt"],
        ["junk.ckpt", "not a safe ltrain checkpoint"],
    ),
    ({}, ["test", "--ckpt", "plain.pt"], ["plain.pt", "not an ltrain checkpoint"]),
    ({}, ["fit", "tiny.yaml", "--resume", "last"], ["--resume last", "no checkpoint"]),
]


@pytest.mark.parametrize(("files", "args", "words"), BROKEN, ids=[" ".join(b[1]) for b in BROKEN])
def test_bad_input_is_one_line_exit_2_and_creates_no_run_folder(workdir, files, args, words):
    for name, text in files.items():
        (workdir / name).write_text(text)
    torch.save({"weights": torch.ones(1)}, workdir / "plain.pt")
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2, result.output
    errors = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(errors) == 1, result.stderr
    assert "Traceback" not in result.output + result.stderr
    for word in words:
        assert word in errors[0], errors[0]
    runs = workdir / "runs"
    assert not runs.exists() or not any(runs.iterdir())


def test_each_command_runs_as_a_real_subprocess(workdir):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    ltrain = [sys.executable, "-m", "ltrain"]
    fit = subprocess.run([*ltrain, "fit", "tiny.yaml"], capture_output=True, text=True, env=env)
    assert fit.returncode == 0, fit.stderr
    for args in (
        ["validate", "tiny.yaml", "--ckpt", "runs/tiny/version_0"],
        ["test", "--ckpt", "runs/tiny/version_0"],
        ["predict", "--ckpt", "runs/tiny/version_0"],
        ["config", "tiny.yaml"],
    ):
        done = subprocess.run([*ltrain, *args], capture_output=True, text=True, env=env)
        assert done.returncode == 0, (args, done.stderr)
    bad = subprocess.run(
        [*ltrain, "fit", "tiny.yaml", "--set", "trainer.max_epoch=1"],
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2
    assert (
        bad.stderr.strip() == "error: trainer.max_epoch: unknown key; did you mean 'max_epochs'? "
        "(--set trainer.max_epoch=1)"
    )


def test_a_problem_from_set_names_the_set_option_and_one_from_the_file_names_the_file(workdir):
    (workdir / "bad.yaml").write_text(yaml.safe_dump({**TINY, "seed": -1}))
    result = CliRunner().invoke(
        main, ["config", "bad.yaml", "--set", "model.lr=fast", "--set", "modle.lr=1"]
    )
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [
        "error: modle: unknown key; did you mean 'model'? (--set modle.lr=1)",
        "error: seed: expected an int from 0 to 4294967295, true (pick one) or null, got -1 "
        "(bad.yaml)",
        "error: model.init_args.lr: expected float, got 'fast' (--set model.lr=fast)",
    ]


def test_a_problem_from_set_on_a_checkpoints_config_names_the_set_option(trained):
    result = CliRunner().invoke(main, ["test", "--ckpt", str(trained), "--set", "model.lr=fast"])
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [
        "error: model.init_args.lr: expected float, got 'fast' (--set model.lr=fast)"
    ]


def test_checkpoint_of_another_model_is_one_line(trained, workdir):
    other = dict(TINY, model={"class_path": "CNNClassifier", "init_args": {"width": 4}})
    (workdir / "other.yaml").write_text(yaml.safe_dump(other))
    result = CliRunner().invoke(main, ["test", "other.yaml", "--ckpt", str(trained)])
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1
    assert "its weights do not fit CNNClassifier" in result.stderr
    assert not (trained.parent / "version_1").exists()


def test_version_folder_whose_newest_checkpoint_is_junk_is_one_line(trained):
    junk = trained / "checkpoints" / "zz.ckpt"
    junk.write_bytes(b"not a checkpoint")
    result = CliRunner().invoke(main, ["test", "--ckpt", str(trained)])
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1
    assert f"{junk}: " in result.stderr and "not a safe ltrain checkpoint" in result.stderr
