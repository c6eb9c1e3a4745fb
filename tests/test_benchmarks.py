"""`make bench` runs end to end (a smoke test: one small round, no timing is asserted)."""

from __future__ import annotations

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
        "PyTorch Lightning",
    ):
        assert row in table, row
