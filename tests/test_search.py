"""`ltrain search`: the space grammar, its checks, and searches on the digits data (Optuna)."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from tiny_runs import invoke, run_json, write_project

from ltrain.app.errors import ConfigError
from ltrain.app.search import timeout_seconds
from ltrain.app.search_space import parse_space

optuna = pytest.importorskip("optuna")

REPO = Path(__file__).resolve().parents[1]
DIGITS = str(REPO / "configs" / "digits.yaml")
QUIET = (
    "--set",
    "trainer.enable_progress_bar=false",
    "--set",
    "trainer.enable_model_summary=false",
)


# ---------------------------------------------------------------------- the grammar
@pytest.mark.parametrize(
    ("text", "kind", "low", "high", "log", "choices"),
    [
        ("model.lr=loguniform(1e-4,1e-1)", "float", 1e-4, 1e-1, True, ()),
        ("model.wd=uniform(0, 0.5)", "float", 0.0, 0.5, False, ()),
        ("trainer.max_epochs=int(5,20)", "int", 5, 20, False, ()),
        ("data.batch_size=choice(32,64,128)", "choice", 0, 0, False, ("32", "64", "128")),
        ("model.optimizer=adam,sgd", "choice", 0, 0, False, ("adam", "sgd")),
        ("model.sizes=choice([64,32],[128,64])", "choice", 0, 0, False, ("[64,32]", "[128,64]")),
    ],
)
def test_each_kind_of_space_parses(text, kind, low, high, log, choices):
    space = parse_space(text)
    assert (space.kind, space.low, space.high, space.log, space.choices) == (
        kind,
        low,
        high,
        log,
        choices,
    )


def test_choices_keep_the_text_typed_and_optuna_gets_scalars():
    space = parse_space("data.batch_size=choice(32,64)")
    assert space.values == (32, 64)
    assert space.override(64) == "data.batch_size=64"
    lists = parse_space("model.sizes=[64,32],[128,64]")
    assert lists.values == ("[64,32]", "[128,64]")  # lists are no Optuna choice: the texts
    assert lists.override("[128,64]") == "model.sizes=[128,64]"
    assert parse_space("trainer.max_epochs=int(2,10,2)").step == 2


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("model.lr=uniform(0.1,0.01)", "LOW must be below HIGH"),
        ("model.lr=uniform(0.1,0.1)", "LOW must be below HIGH"),
        ("model.lr=loguniform(0,1)", "loguniform needs LOW > 0"),
        ("data.batch_size=choice()", "an empty choice"),
        ("data.batch_size=choice(32,,64)", "an empty value"),
        ("trainer.max_epochs=int(1.5,4)", "whole numbers"),
        ("model.lr=normal(0,1)", "unknown function 'normal'"),
        ("model.lr=uniform(a,1)", "'a' is not a number"),
        ("model.lr=0.1", "one value is no space"),
        ("model.lr", "expected KEY=SPEC"),
        ("data.batch_size=32,32", "appears twice"),
    ],
)
def test_a_malformed_space_is_one_line_naming_it(text, message):
    with pytest.raises(ConfigError, match=message) as error:
        parse_space(text)
    assert len(str(error.value).splitlines()) == 1
    assert str(error.value).startswith("--space ")


# ---------------------------------------------------------------------- checks before any trial
@pytest.mark.parametrize(
    ("space", "expected"),
    [
        (
            "model.hiden=choice(1,2)",
            "error: model.init_args.hiden: unknown key; valid keys: in_features, num_classes, "
            "lr, optimizer, weight_decay (--space model.hiden=choice(1,2))",
        ),
        (
            "trainer.max_epochs=uniform(1,5)",
            "error: trainer.max_epochs: expected int or null, got 1.0 "
            "(--space trainer.max_epochs=uniform(1,5))",
        ),
        (
            "data.batch_size=choice()",
            "error: --space data.batch_size=choice(): an empty choice; write choice(A,B,...) "
            "with at least one value",
        ),
        (
            "model.lr=uniform(1,0)",
            "error: --space model.lr=uniform(1,0): LOW must be below HIGH, got 1 >= 0",
        ),
    ],
)
def test_a_bad_space_fails_the_search_before_anything_is_written(
    tmp_path, monkeypatch, space, expected
):
    monkeypatch.chdir(tmp_path)
    result = invoke("search", DIGITS, "--space", space, "--trials", "2")
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [expected]
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (
            ("--sampler", "bayes"),
            "--sampler 'bayes': expected one of auto, gp, tpe, random, grid, cmaes",
        ),
        (("--pruner", "early"), "--pruner 'early': expected one of median, hyperband, none"),
        (("--direction", "up"), "--direction 'up': expected maximize or minimize"),
        (("--metric", "valid_loss"), "--direction: say whether valid_loss should be maximized"),
        (("--trials", "0"), "--trials 0: expected a whole number of at least 1"),
        (("--sampler", "grid"), "--sampler grid: model.lr is a range; a grid needs lists"),
        (("--timeout", "soon"), "--timeout 'soon': expected a duration such as 90s"),
        (("--timeout", "1:2"), "--timeout='1:2': expected a time as 'DD:HH:MM:SS'"),
        (
            ("--storage", "bogus://x"),
            "--storage bogus://x: Can't load plugin: sqlalchemy.dialects:bogus",
        ),
    ],
)
def test_bad_search_options_are_one_line_errors(tmp_path, monkeypatch, options, message):
    monkeypatch.chdir(tmp_path)
    result = invoke("search", DIGITS, "--space", "model.lr=loguniform(1e-3,1e-1)", *options)
    assert result.exit_code == 2, result.output
    assert len(result.stderr.strip().splitlines()) == 1
    assert message in result.stderr
    assert not (tmp_path / "runs").exists()


def test_an_unknown_key_in_the_search_block_is_named(tmp_path, monkeypatch):
    config = yaml.safe_load(Path(DIGITS).read_text())
    config["search"] = {"space": {"model.lr": "loguniform(1e-3,1e-1)"}, "trails": 3}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    monkeypatch.chdir(tmp_path)
    result = invoke("search", "c.yaml")
    assert result.exit_code == 2
    assert result.stderr.startswith("error: search.trails: unknown key; valid keys: space, metric")
    # ltrain fit reads past the block (and config.yaml leaves it out): one file for both commands
    assert invoke("config", "c.yaml").exit_code == 0
    assert "search" not in yaml.safe_load(invoke("config", "c.yaml").stdout)


def test_without_optuna_the_search_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setitem(sys.modules, "optuna", None)  # import optuna raises ImportError
    result = invoke("search", DIGITS, "--space", "model.lr=loguniform(1e-3,1e-1)")
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [
        "error: ltrain search runs on Optuna, which is not installed: pip install 'ltrain[search]'"
    ]
    assert not (tmp_path / "runs").exists()


# ---------------------------------------------------------------------- searches
def study_of(folder: Path, name: str = "digits-mlp") -> optuna.Study:
    url = f"sqlite:///{folder / 'runs' / name / 'search.db'}"
    return optuna.load_study(study_name=name, storage=url)


def live(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    retried = {n for t in study.trials for n in t.system_attrs.get("retry_history", [])}
    return [t for t in study.trials if t.number not in retried and not t.user_attrs.get("surplus")]


def trial_folders(folder: Path, name: str = "digits-mlp") -> dict[int, dict]:
    """run.json of every trial's version folder, by trial number (each number at most once)."""
    found: dict[int, dict] = {}
    for path in sorted((folder / "runs" / name).glob("version_*")):
        record = run_json(path)
        number = record["search"]["trial"]
        assert number not in found, f"trial {number} ran twice"
        found[number] = {**record, "path": path}
    return found


def test_a_search_block_in_the_config_runs_trials_that_are_ordinary_runs(tmp_path, monkeypatch):
    config = yaml.safe_load(Path(DIGITS).read_text())
    config["trainer"]["max_epochs"] = 2
    config["search"] = {
        "space": {"model.lr": "loguniform(1e-3,1e-1)", "data.batch_size": [32, 64]},
        "trials": 3,
        "pruner": "none",
    }
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    monkeypatch.chdir(tmp_path)
    result = invoke("search", "c.yaml", *QUIET)
    assert result.exit_code == 0, result.output
    study = study_of(tmp_path)
    assert [t.state.name for t in study.trials] == ["COMPLETE"] * 3
    assert study.direction.name == "MAXIMIZE"  # the config's ModelCheckpoint: valid_acc, max
    runs = trial_folders(tmp_path)
    for trial in study.trials:
        record = runs[trial.number]
        assert record["state"] == "finished"
        assert record["search"]["study"] == "digits-mlp"
        assert record["search"]["params"]["data.batch_size"] == str(trial.params["data.batch_size"])
        assert float(record["search"]["params"]["model.lr"]) == trial.params["model.lr"]
        saved = yaml.safe_load((record["path"] / "config.yaml").read_text())
        assert saved["model"]["init_args"]["lr"] == trial.params["model.lr"]
        # the trial's value is its best valid_acc, the one its best checkpoint holds
        assert trial.value == pytest.approx(record["best_model_score"])
        assert (record["path"] / "metrics.csv").is_file()
    best = study.best_trial
    lines = result.stdout.splitlines()
    assert (
        f"Best trial {best.number}: valid_acc={best.value:.6g}  ({runs[best.number]['path'].relative_to(tmp_path)})"
        in lines
    )
    again = next(line for line in lines if line.startswith("Run it again: "))
    assert (
        again.startswith("Run it again: ltrain fit c.yaml --set trainer.enable_progress_bar=false")
        and f"--set data.batch_size={best.params['data.batch_size']} " in again
        and f"--set model.lr={best.params['model.lr']!r}" in again
    )
    best_config = tmp_path / "runs" / "digits-mlp" / "digits-mlp.best.yaml"
    assert (
        yaml.safe_load(best_config.read_text())["model"]["init_args"]["lr"]
        == best.params["model.lr"]
    )
    for plot in ("history", "importances"):
        assert (tmp_path / "runs" / "digits-mlp" / f"digits-mlp.{plot}.png").stat().st_size > 1000

    shown = invoke("search", "--show", "digits-mlp")
    assert shown.exit_code == 0
    assert shown.stdout.split("\nStudy")[1] == result.stdout.split("\nStudy")[1]
    table = invoke("runs", "--study", "digits-mlp")
    assert table.exit_code == 0
    lines = table.stdout.strip().splitlines()
    assert lines[0] == "best: highest valid_acc" and len(lines) == 5  # header + 3 trials
    assert lines[1].split()[6:8] == ["data.batch_size", "model.lr"]  # the block's order
    assert invoke("runs", "--study", "other").exit_code == 2

    again_result = invoke("search", "c.yaml", *QUIET)  # the study is complete: nothing to run
    assert again_result.exit_code == 0 and len(study_of(tmp_path).trials) == 3
    other = invoke("search", "c.yaml", "--space", "model.lr=uniform(0.01,0.1)")
    assert other.exit_code == 2
    assert other.stderr.startswith("error: --study digits-mlp: this study in sqlite:///runs/")
    assert "or a new --study NAME" in other.stderr


def test_a_crashing_trial_is_failed_with_its_error_and_the_search_goes_on(tmp_path, monkeypatch):
    monkeypatch.chdir(write_project(tmp_path).parent)
    result = invoke(
        "search",
        "tiny.yaml",
        *("--space", "trainer.callbacks.1.step=-1,1", "--sampler", "grid", "--trials", "2"),
    )
    assert result.exit_code == 0, result.output
    study = study_of(tmp_path, "tiny")
    states = {t.params["trainer.callbacks.1.step"]: t for t in study.trials}
    assert states[-1].state.name == "COMPLETE"
    assert states[1].state.name == "FAIL"
    assert states[1].user_attrs["error"] == "RuntimeError: boom at step 1"
    runs = trial_folders(tmp_path, "tiny")
    assert runs[states[1].number]["state"] == "failed"
    assert "RuntimeError: boom at step 1" in result.stdout  # the table's error column


def test_a_metric_never_logged_fails_each_trial_naming_what_was_and_the_search_exits_1(
    tmp_path, monkeypatch
):
    monkeypatch.chdir(write_project(tmp_path).parent)
    result = invoke(
        "search",
        "tiny.yaml",
        *("--space", "model.lr=loguniform(1e-3,1e-1)", "--trials", "2"),
        *("--metric", "valid_accuracy", "--direction", "maximize"),
    )
    assert result.exit_code == 1
    study = study_of(tmp_path, "tiny")
    assert [t.state.name for t in study.trials] == ["FAIL", "FAIL"]
    error = study.trials[0].user_attrs["error"]
    assert error.startswith("valid_accuracy was never logged (logged: ")
    assert "valid_loss" in error
    assert "No trial has finished yet: no best trial." in result.stdout


def test_ctrl_c_stops_the_search_and_requeues_its_trial(tmp_path, monkeypatch):
    monkeypatch.chdir(write_project(tmp_path).parent)
    result = invoke(
        "search",
        "tiny.yaml",
        *("--set", "trainer.callbacks.1.error=KeyboardInterrupt"),
        *("--space", "trainer.callbacks.1.step=choice(1,2)", "--trials", "3"),
    )
    assert result.exit_code == 130
    assert "Search stopped; continue it with: ltrain search tiny.yaml" in result.stderr
    study = study_of(tmp_path, "tiny")
    failed, waiting = study.trials
    assert failed.state.name == "FAIL" and failed.user_attrs["error"] == "interrupted"
    assert waiting.state.name == "WAITING" and waiting.params == failed.params
    assert waiting.system_attrs["retry_history"] == [failed.number]
    assert [t.number for t in live(study)] == [waiting.number]  # it takes the first's place


@pytest.mark.slow
def test_twelve_trials_on_two_processes_prune_and_beat_the_grid_of_the_same_budget(
    tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    common = ("--set", "trainer.max_epochs=8", *QUIET)
    grid = invoke(
        "fit",
        DIGITS,
        *("--set", "model.lr=1e-4,1e-3,1e-2,1e-1", "--set", "data.batch_size=32,64,128"),
        *common,
        "--multirun",
    )
    assert grid.exit_code == 0, grid.output
    grid_best = max(
        run_json(f)["best_model_score"]
        for f in (tmp_path / "runs" / "digits-mlp").glob("version_*")
    )
    result = invoke(
        "search",
        DIGITS,
        *("--space", "model.lr=loguniform(1e-4,1e-1)", "--space", "data.batch_size=32,64,128"),
        *common,
        *("--study", "s", "--storage", "sqlite:///search/s.db"),
        *("--trials", "12", "--jobs", "2", "--pruner", "median"),
    )
    assert result.exit_code == 0, result.output
    study = optuna.load_study(study_name="s", storage="sqlite:///search/s.db")
    states = [t.state.name for t in study.trials]
    assert len(states) == 12 and set(states) <= {"COMPLETE", "PRUNED"}
    assert states.count("PRUNED") >= 1
    assert study.best_value >= grid_best
    runs = {}
    for folder in (tmp_path / "runs" / "digits-mlp").glob("version_*"):
        record = run_json(folder)
        if "search" in record:
            runs[record["search"]["trial"]] = record
    assert sorted(runs) == list(range(12))
    pids = {record["pid"] for record in runs.values()}
    assert len(pids) == 2 and os.getpid() not in pids  # two worker processes ran them
    for trial in study.trials:
        expected = "pruned" if trial.state.name == "PRUNED" else "finished"
        assert runs[trial.number]["state"] == expected
    assert sorted(p.name for p in (tmp_path / "search").glob("s.worker-*.log")) == [
        "s.worker-0.log",
        "s.worker-1.log",
    ]


def search_process(folder: Path, trials: int, epochs: int, log: str) -> subprocess.Popen:
    """`ltrain search` on digits in a process of its own, its output in `folder/log`."""
    command = [sys.executable, "-m", "ltrain", "search", DIGITS, *QUIET]
    command += ["--space", "model.lr=loguniform(1e-3,1e-1)", "--pruner", "none"]
    command += ["--trials", str(trials), "--set", f"trainer.max_epochs={epochs}"]
    with open(folder / log, "w") as output:
        return subprocess.Popen(command, cwd=folder, stdout=output, stderr=subprocess.STDOUT)


def finished(process: subprocess.Popen, folder: Path, log: str) -> None:
    process.wait(timeout=300)
    assert process.returncode == 0, (folder / log).read_text()[-3000:]


@pytest.mark.slow
def test_kill_9_mid_search_then_the_same_command_finishes_it_without_loss_or_duplicate(tmp_path):
    first = search_process(tmp_path, trials=5, epochs=40, log="first.log")
    db = tmp_path / "runs" / "digits-mlp" / "search.db"

    def running_trial_with_a_folder() -> int | None:
        """A running trial's number once another has finished and it has its run folder.
        Read with sqlite3: opening Optuna's storage here could race the search creating it."""
        try:
            with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as connection:
                states = dict(connection.execute("SELECT number, state FROM trials"))
        except sqlite3.Error:  # no database or no table yet
            return None
        running = [n for n, state in states.items() if state == "RUNNING"]
        if not running or "COMPLETE" not in states.values():
            return None
        for path in (tmp_path / "runs" / "digits-mlp").glob("version_*/run.json"):
            if json.loads(path.read_text())["search"]["trial"] == running[0]:
                return running[0]
        return None

    end = time.time() + 180
    while running_trial_with_a_folder() is None:
        assert first.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
        assert time.time() < end, "no trial was seen running after another finished"
        time.sleep(0.1)
    first.send_signal(signal.SIGKILL)
    first.wait()
    killed = next(t for t in study_of(tmp_path).trials if t.state.name == "RUNNING")

    second = search_process(tmp_path, trials=5, epochs=40, log="second.log")
    finished(second, tmp_path, "second.log")
    study = study_of(tmp_path)
    counted = live(study)
    assert [t.state.name for t in counted] == ["COMPLETE"] * 5
    lost = next(t for t in study.trials if t.number == killed.number)
    assert lost.state.name == "FAIL"  # its heartbeat stopped; a retry took its place
    retry = next(t for t in counted if t.system_attrs.get("retry_history") == [killed.number])
    assert retry.params == killed.params
    runs = trial_folders(tmp_path)
    assert sorted(runs) == sorted([*(t.number for t in counted), killed.number])
    assert runs[killed.number]["state"] == "running"  # `ltrain runs` says died
    assert all(runs[t.number]["state"] == "finished" for t in counted)


@pytest.mark.slow
def test_two_search_processes_share_one_study_and_never_run_a_trial_twice(tmp_path):
    # started together (one creates the study, the other finds it), so that both are up while
    # trials remain: a process that started late on a busy machine could find the study done
    first = search_process(tmp_path, trials=8, epochs=40, log="first.log")
    second = search_process(tmp_path, trials=8, epochs=40, log="second.log")
    finished(first, tmp_path, "first.log")
    finished(second, tmp_path, "second.log")
    study = study_of(tmp_path)
    counted = live(study)
    assert len(counted) == 8 and all(t.state.name == "COMPLETE" for t in counted)
    runs = trial_folders(tmp_path)  # fails if a trial number ran in two folders
    assert sorted(runs) == sorted(t.number for t in counted)
    by_process = {record["pid"] for record in runs.values()}
    assert by_process == {first.pid, second.pid}
    extra = [t for t in study.trials if t.user_attrs.get("surplus")]
    assert all(t.number not in runs for t in extra)  # a surplus trial is never run


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90", 90.0),
        ("90s", 90.0),
        ("30m", 1800.0),
        ("1h30m", 5400.0),
        ("1d", 86400.0),
        ("0.5s", 0.5),
        ("00:01:30:00", 5400.0),
    ],
)
def test_timeout_durations(text, seconds):
    assert timeout_seconds(text) == seconds


def test_timeout_starts_no_trial_after_it_and_reports_what_ran(tmp_path, monkeypatch):
    monkeypatch.chdir(write_project(tmp_path).parent)
    result = invoke(
        "search",
        "tiny.yaml",
        *("--space", "model.lr=loguniform(1e-3,1e-1)", "--trials", "50"),
        *("--timeout", "0.1s"),
    )
    assert result.exit_code == 0, result.output
    study = study_of(tmp_path, "tiny")
    assert [t.state.name for t in study.trials] == ["COMPLETE"]  # begun before the deadline
    assert "Study tiny (sqlite:///runs/tiny/search.db): 1 trials, 1 complete" in result.stdout
