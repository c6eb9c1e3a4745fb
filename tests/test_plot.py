"""`ltrain plot`: one axes per metric, train and valid together, several runs overlaid."""

from __future__ import annotations

import subprocess
import sys

import pandas as pd
import pytest
from tiny_runs import invoke, write_project

from ltrain.app.plots import metric_group, plot_runs


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """Two finished runs of tiny.yaml (lr 0.01 and 0.003) with a learning-rate monitor."""
    folder = tmp_path_factory.mktemp("project")
    write_project(folder)
    monitor = "trainer.callbacks.1={class_path: LearningRateMonitor}"
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)
        for lr in ("0.01", "0.003"):
            result = invoke("fit", "tiny.yaml", "--set", monitor, "--set", f"model.lr={lr}")
            assert result.exit_code == 0, result.output
    return folder


def legend(axes) -> list[str]:
    return [text.get_text() for text in axes.get_legend().get_texts()]


def test_metric_group_puts_train_and_valid_of_a_metric_together():
    names = ["train_loss_step", "train_loss_epoch", "valid_loss", "val_loss", "test_loss"]
    assert {metric_group(n) for n in names} == {"loss"}
    assert metric_group("lr-Adam") == "lr-Adam"
    assert metric_group("train/acc_step") == "acc"


def test_plot_draws_steps_as_lines_and_epochs_as_markers_on_one_axes_per_metric(project, tmp_path):
    version = project / "runs" / "tiny" / "version_0"
    figure, path = plot_runs([str(version)], out=tmp_path / "p.png")
    axes = {a.get_title(): a for a in figure.axes}
    assert list(axes) == ["loss", "acc", "lr-Adam"]
    loss = axes["loss"]
    assert (loss.get_xlabel(), loss.get_ylabel()) == ("step", "loss")
    assert legend(loss) == ["train_loss_step", "train_loss_epoch", "valid_loss"]
    lines = {line.get_label(): line for line in loss.get_lines()}
    assert lines["train_loss_step"].get_marker() in ("None", "", None)
    assert lines["valid_loss"].get_marker() not in ("None", "", None)
    metrics = pd.read_csv(version / "metrics.csv")
    expected = metrics[["step", "valid_loss"]].dropna()
    assert list(lines["valid_loss"].get_xdata()) == list(expected["step"])
    assert list(lines["valid_loss"].get_ydata()) == pytest.approx(list(expected["valid_loss"]))
    assert figure.texts[0].get_text() == "tiny/version_0"  # the suptitle names the run
    data = path.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and 20_000 < len(data) < 2_000_000


def test_several_runs_are_overlaid_in_their_own_colours(project, tmp_path):
    runs = [str(project / "runs" / "tiny" / f"version_{n}") for n in (0, 1)]
    figure, _ = plot_runs(runs, ["loss"], tmp_path / "both.png")
    (axes,) = figure.axes
    labels = legend(axes)
    assert labels[0] == "tiny/version_0 train_loss_step"
    assert {label.split()[0] for label in labels} == {"tiny/version_0", "tiny/version_1"}
    colours = {line.get_label().split()[0]: line.get_color() for line in axes.get_lines()}
    assert colours["tiny/version_0"] != colours["tiny/version_1"]


def test_a_run_folder_means_its_latest_version_and_the_png_goes_there(project, monkeypatch):
    monkeypatch.chdir(project)
    result = invoke("plot", "runs/tiny", "--metric", "valid_acc", "--metric", "lr-Adam")
    assert result.exit_code == 0, result.output
    written = project / "runs" / "tiny" / "version_1" / "plot.png"
    assert result.stdout.strip() == "runs/tiny/version_1/plot.png"
    assert written.read_bytes().startswith(b"\x89PNG")
    figure, _ = plot_runs(["tiny"], ["valid_acc"], project / "one.svg")  # a bare name: runs/NAME
    assert [a.get_title() for a in figure.axes] == ["valid_acc"]
    assert legend(figure.axes[0]) == ["valid_acc"]


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["runs/nope"], ["runs/nope", "no such run or version folder"]),
        (["tiny.yaml"], ["tiny.yaml", "not a run folder"]),
        (
            ["runs/tiny", "--metric", "los"],
            ["--metric los", "available:", "loss", "train_loss", "valid_acc"],
        ),
        (["runs/tiny", "--out", "p.jpg"], ["--out p.jpg", ".png"]),
    ],
)
def test_bad_plot_input_is_one_line_exit_2_and_writes_nothing(project, monkeypatch, args, words):
    monkeypatch.chdir(project)
    result = invoke("plot", *args)
    assert result.exit_code == 2, result.output
    errors = result.stderr.strip().splitlines()
    assert len(errors) == 1 and "Traceback" not in result.output
    for word in words:
        assert word in errors[0], errors[0]
    assert not (project / "p.jpg").exists()


@pytest.mark.parametrize("command", ["plot", "runs"])
def test_help_of_runs_and_plot_imports_neither_pandas_nor_matplotlib(command):
    code = (
        "import sys\n"
        "from ltrain.app.cli import main\n"
        f"main([{command!r}, '--help'], prog_name='ltrain', standalone_mode=False)\n"
        "print('heavy:', *[m for m in ('torch', 'pandas', 'matplotlib') if m in sys.modules])\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.splitlines()[-1] == "heavy:"
