"""`make run`'s job, run for real: the digits default trains to >= 90% and says where it wrote."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_default_config_trains_digits_above_90_percent(tmp_path):
    shutil.copytree(ROOT / "configs", tmp_path / "configs")
    out = subprocess.run(
        [sys.executable, "-m", "ltrain", "fit", "configs/digits.yaml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,  # how long it takes belongs to make bench; this only stops a hang
    )
    assert out.returncode == 0, out.stderr
    assert "Run folder: runs/digits-mlp/version_0" in out.stdout
    assert out.stdout.rstrip().endswith("Done: runs/digits-mlp/version_0")
    accuracy = float(re.search(r"^\s+valid_acc\s+([0-9.]+)$", out.stdout, re.M).group(1))
    assert accuracy >= 0.90
    folder = tmp_path / "runs" / "digits-mlp" / "version_0"
    metrics = pd.read_csv(folder / "metrics.csv")
    assert metrics["valid_acc"].dropna().iloc[-1] == pytest.approx(accuracy, abs=1e-5)
    assert (folder / "checkpoints" / "last.ckpt").is_file()
