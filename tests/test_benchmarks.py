"""`make bench` runs end to end (a smoke test: one small round, no timing is asserted)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "benchmarks" / "bench.py"


@pytest.mark.slow
def test_bench_quick_prints_every_row_of_the_table():
    done = subprocess.run(
        [sys.executable, str(BENCH), "--quick"], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    table = done.stdout.split("workload", 1)[1]
    for row in (
        "tiny MLP",
        "seed two-branch MLP",
        "`ltrain fit configs/mnist.yaml` vs classic recipe",
        "plain loop on preloaded tensors",
        "`ltrain --help`",
        "`ltrain config configs/digits.yaml`",
        "`import ltrain` vs `import torch`",
        "search: digits, 4 trials x up to 4 epochs: median pruner vs none",
        "search: digits, 4 trials x up to 4 epochs: 2 jobs vs 1",
        "PyTorch Lightning",
    ):
        assert row in table, row


@pytest.mark.slow
@pytest.mark.skipif(
    not Path("/usr/include/valgrind/callgrind.h").exists(), reason="needs valgrind's headers"
)
def test_both_instruction_counting_children_train_past_the_window(tmp_path):
    """Outside valgrind the window's client requests do nothing, so both sides just train.

    Each side must train beyond the window's last step, or callgrind would never stop counting.
    """
    spec = importlib.util.spec_from_file_location("instructions", BENCH.parent / "instructions.py")
    instructions = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(instructions)
    helper = instructions.build_helper(str(tmp_path))
    first, steps = instructions.WINDOWS["tiny"]
    for side in ("plain", "ltrain"):
        done = subprocess.run(
            [
                sys.executable,
                str(BENCH.parent / "instructions.py"),
                "--child",
                "tiny",
                side,
                helper,
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        trained = json.loads(done.stdout.strip().splitlines()[-1])["steps"]
        assert trained == first + steps + 1, side
