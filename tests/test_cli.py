"""The `ltrain` command starts without importing the heavy libraries."""

from __future__ import annotations

import subprocess
import sys

HEAVY = ("torch", "pandas", "matplotlib")


def test_help_does_not_import_torch_pandas_or_matplotlib():
    code = (
        "import sys\n"
        "from click.testing import CliRunner\n"
        "from ltrain.cli import main\n"
        "result = CliRunner().invoke(main, ['--help'])\n"
        "assert result.exit_code == 0, result.output\n"
        f"print([m for m in {HEAVY!r} if m in sys.modules])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_python_dash_m_ltrain_prints_version():
    out = subprocess.run(
        [sys.executable, "-m", "ltrain", "--version"], capture_output=True, text=True
    )
    assert out.returncode == 0
    assert out.stdout.startswith("ltrain, version ")


def test_import_ltrain_is_lazy_until_a_name_is_used():
    code = (
        "import sys, ltrain\n"
        "before = 'torch' in sys.modules\n"
        "ltrain.Trainer\n"
        "print(before, 'torch' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False True"


def test_set_key_completion_works_without_importing_torch(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("model: {class_path: MLPClassifier, init_args: {lr: 0.1}}\n")
    code = (
        "import sys\n"
        "from ltrain.cli import main\n"
        "try:\n"
        "    main(prog_name='ltrain')\n"
        "except SystemExit:\n"
        "    pass\n"
        "print('torch' in sys.modules, file=sys.stderr)\n"
    )
    env = {
        "_LTRAIN_COMPLETE": "bash_complete",
        "COMP_WORDS": f"ltrain fit {config} --set ",
        "COMP_CWORD": "4",
        "PATH": "/usr/bin:/bin",
    }
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    candidates = [line.split(",", 1)[1] for line in out.stdout.splitlines()]
    assert "model.lr=" in candidates
    assert "trainer.max_epochs=" in candidates
    assert out.stderr.strip() == "False"
