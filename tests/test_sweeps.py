"""`ltrain fit ... --multirun`: the grid of comma-separated `--set` values, one run each."""

from __future__ import annotations

import pytest
import yaml
from tiny_runs import invoke, run_json, write_project

from ltrain.app.errors import ConfigError
from ltrain.app.sweeps import expand, split_values

FAST = {"max_epochs": 1, "limit_train_batches": 2}


@pytest.mark.parametrize(
    ("text", "values"),
    [
        ("model.lr=1e-3,3e-4", ["1e-3", "3e-4"]),
        ("model.lr=1e-3", ["1e-3"]),
        ("model.sizes=[64,32]", ["[64,32]"]),
        ("model.sizes=[64,32],[128, 64]", ["[64,32]", "[128, 64]"]),
        ("data.opts={a: 1, b: 2},null", ["{a: 1, b: 2}", "null"]),
        ("name='a,b',c", ["'a,b'", "c"]),
        ("name=it's,b", ["it's", "b"]),
    ],
)
def test_only_commas_outside_brackets_and_quotes_separate_values(text, values):
    key = text.partition("=")[0]
    assert split_values(text) == [f"{key}={v}" for v in values]


def test_empty_value_in_a_list_is_refused():
    with pytest.raises(ConfigError, match="empty value"):
        split_values("model.lr=1e-3,")


def test_grid_is_the_cartesian_product_first_set_slowest():
    members, swept = expand(["model.lr=1,2", "trainer.max_epochs=1", "seed=0,1,2"])
    assert len(members) == 6 and swept == ["model.lr", "seed"]
    assert members[0] == ["model.lr=1", "trainer.max_epochs=1", "seed=0"]
    assert members[3] == ["model.lr=2", "trainer.max_epochs=1", "seed=0"]


def sweep_table(output: str) -> list[list[str]]:
    """The rows of the table printed after `Sweep:`, split into cells."""
    lines = output[output.index("\nSweep:") :].splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("name "))
    rows = []
    for line in lines[start + 1 :]:
        if not line.startswith("tiny "):
            break
        rows.append(line.split())
    return rows


@pytest.mark.slow
def test_two_by_two_sweep_makes_four_version_folders_and_a_table_sorted_by_the_monitor(
    tmp_path, monkeypatch
):
    monkeypatch.chdir(write_project(tmp_path, **FAST).parent)
    result = invoke(
        "fit",
        "tiny.yaml",
        *("--set", "model.lr=0.01,0.001", "--set", "data.batch_size=32,64", "--multirun"),
    )
    assert result.exit_code == 0, result.output
    runs = tmp_path / "runs" / "tiny"
    folders = sorted(runs.iterdir())
    assert [f.name for f in folders] == [f"version_{n}" for n in range(4)]
    grid = []
    for number, folder in enumerate(folders, start=1):
        config = yaml.safe_load((folder / "config.yaml").read_text())
        grid.append((config["model"]["init_args"]["lr"], config["data"]["init_args"]["batch_size"]))
        record = run_json(folder)
        assert record["state"] == "finished"
        assert record["sweep"]["member"] == number and record["sweep"]["members"] == 4
        assert record["command_line"] == (
            f"ltrain fit tiny.yaml --set model.lr={grid[-1][0]} --set data.batch_size={grid[-1][1]}"
        )
    assert grid == [(0.01, 32), (0.01, 64), (0.001, 32), (0.001, 64)]
    assert "Sweep: 4 runs, best first" in result.stdout
    assert "best: lowest valid_loss" in result.stdout
    header = result.stdout[result.stdout.index("best: lowest") :].splitlines()[1].split()
    assert header[:8] == ["name", "v", "state", "ep", "time", "best", "model.lr", "data.batch_size"]
    rows = sweep_table(result.stdout)
    best = {int(row[1]): run_json(runs / f"version_{row[1]}")["best_model_score"] for row in rows}
    assert sorted(best) == [0, 1, 2, 3]
    assert list(best.values()) == sorted(best.values())  # best (lowest) valid_loss first
    assert [(float(r[6]), int(r[7])) for r in rows] == [grid[int(r[1])] for r in rows]


@pytest.mark.slow
def test_failing_member_is_recorded_and_the_others_still_run(tmp_path, monkeypatch):
    monkeypatch.chdir(write_project(tmp_path, **FAST).parent)
    result = invoke(
        "fit",
        "tiny.yaml",
        *("--set", "trainer.callbacks.1.step=1,-1", "--set", "trainer.precision=32,16-mixed"),
        *("--set", "trainer.accelerator=cpu"),  # where 16-mixed cannot run, also on a GPU machine
        "--multirun",
    )
    assert result.exit_code == 1
    assert "RuntimeError: boom at step 1" in result.stderr  # the user's code: its traceback
    runs = tmp_path / "runs" / "tiny"
    states = {f.name: run_json(f)["state"] for f in sorted(runs.iterdir())}
    assert states == {"version_0": "failed", "version_1": "finished"}
    assert "Sweep: 2 runs, 3 failed, best first" in result.stdout
    rows = sweep_table(result.stdout)
    assert [(r[1], r[2]) for r in rows] == [("1", "finished"), ("0", "failed")]
    not_started = [line for line in result.stdout.splitlines() if line.startswith("Not started")]
    assert len(not_started) == 2 and all("16-mixed" in line for line in not_started)


def test_ctrl_c_in_one_member_stops_the_sweep(tmp_path, monkeypatch):
    monkeypatch.chdir(write_project(tmp_path, **FAST).parent)
    result = invoke(
        "fit",
        "tiny.yaml",
        *("--set", "trainer.callbacks.1.error=KeyboardInterrupt"),
        *("--set", "trainer.callbacks.1.step=-1,1,-1"),
        "--multirun",
    )
    assert result.exit_code == 1 and "Aborted!" in result.stderr
    runs = tmp_path / "runs" / "tiny"
    states = [run_json(f)["state"] for f in sorted(runs.iterdir())]
    assert states == ["finished", "interrupted"]  # the third never started
    assert "Sweep: 2 runs" in result.stdout


def test_a_bad_value_in_any_member_stops_the_sweep_before_it_starts(tmp_path, monkeypatch):
    monkeypatch.chdir(write_project(tmp_path, **FAST).parent)
    result = invoke("fit", "tiny.yaml", "--set", "model.lr=0.01,fast,slow", "--multirun")
    assert result.exit_code == 2
    errors = result.stderr.strip().splitlines()
    assert errors == [
        "error: model.init_args.lr: expected float, got 'fast' (--set model.lr=fast) [sweep run 2]",
        "error: model.init_args.lr: expected float, got 'slow' (--set model.lr=slow) [sweep run 3]",
    ]
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--set", "model.lr=1e-3,3e-4"], ["'1e-3,3e-4'", "add --multirun"]),
        (["--set", "model.lr=1e-3,", "--multirun"], ["empty value", "KEY=A,B,C"]),
        (["--multirun", "--resume", "last"], ["--multirun", "--resume"]),
        (["--set", "trainer.max_epochs=1,two", "--multirun"], ["trainer.max_epochs", "int"]),
    ],
)
def test_bad_sweep_input_is_one_line_exit_2(tmp_path, monkeypatch, args, words):
    monkeypatch.chdir(write_project(tmp_path, **FAST).parent)
    result = invoke("fit", "tiny.yaml", *args)
    assert result.exit_code == 2
    errors = result.stderr.strip().splitlines()
    assert len(errors) == 1 and "Traceback" not in result.output
    for word in words:
        assert word in errors[0], errors[0]
    assert not (tmp_path / "runs").exists()


def test_sweep_table_of_no_monitor_keeps_run_order(tmp_path, monkeypatch):
    path = write_project(tmp_path, **FAST)
    config = yaml.safe_load(path.read_text())
    config["trainer"]["callbacks"] = [config["trainer"]["callbacks"][1]]
    path.write_text(yaml.safe_dump(config))
    monkeypatch.chdir(tmp_path)
    result = invoke("fit", "tiny.yaml", "--set", "model.lr=0.01,0.02", "--multirun")
    assert result.exit_code == 0, result.output
    assert "in run order (the config monitors no metric)" in result.stdout
    assert [r[1] for r in sweep_table(result.stdout)] == ["0", "1"]
    assert "best" not in result.stdout
