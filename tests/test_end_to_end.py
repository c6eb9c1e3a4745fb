"""`make run`'s job, run for real: the digits default trains to >= 90% and says where it wrote."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest


@pytest.mark.slow
def test_default_run_trains_digits_above_90_percent_in_under_a_minute(tmp_path):
    start = time.monotonic()
    out = subprocess.run(
        [sys.executable, "-m", "ltrain.zoo.demo"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    elapsed = time.monotonic() - start
    assert out.returncode == 0, out.stderr
    folder = re.search(r"Run folder: (\S+)", out.stdout).group(1)
    accuracy = float(re.search(r"Final validation accuracy: ([0-9.]+)", out.stdout).group(1))
    assert folder == "runs/digits-mlp/version_0"
    assert accuracy >= 0.90
    assert elapsed < 60
    metrics = pd.read_csv(Path(tmp_path, folder, "metrics.csv"))
    assert metrics["valid_acc"].dropna().iloc[-1] == pytest.approx(accuracy, abs=1e-3)
    assert list(Path(tmp_path, folder, "checkpoints").glob("*.ckpt"))
