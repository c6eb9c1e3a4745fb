"""The `ltrain` command starts, and checks configs, without importing the heavy libraries.

`ltrain config` knows ltrain's own signatures from ltrain/app/signatures.json; the tests here hold
that file to the classes: it must be what regenerating it writes, and what is read back from it
must be what `inspect` says of every built-in class once imported.
"""

from __future__ import annotations

import importlib
import inspect
import subprocess
import sys
import types
import typing
from pathlib import Path

import pytest

from ltrain.app.signatures import (
    DATA_FILE,
    SHORT_NAMES,
    TRAINER,
    read_class,
    signature_data,
    signatures_json,
)

HEAVY = ("torch", "pandas", "matplotlib")
CONFIGS = Path(__file__).resolve().parent.parent / "configs"


def heavy_modules_after(args: list[str]) -> list[str]:
    """Run `ltrain ARGS` in a fresh interpreter; the heavy modules it left in sys.modules."""
    code = (
        "import sys\n"
        "from ltrain.app.cli import main\n"
        f"main({args!r}, prog_name='ltrain', standalone_mode=False)\n"
        f"print('heavy:', *[m for m in {HEAVY!r} if m in sys.modules])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return out.stdout.splitlines()[-1].split()[1:]


@pytest.mark.parametrize("args", [["--help"], ["fit", "--help"]], ids=" ".join)
def test_help_does_not_import_torch_pandas_or_matplotlib(args):
    assert heavy_modules_after(args) == []


@pytest.mark.parametrize("config", ["digits.yaml", "mnist.yaml"])
def test_config_command_validates_without_importing_torch_pandas_or_matplotlib(config):
    assert heavy_modules_after(["config", str(CONFIGS / config)]) == []


def test_nested_ltrain_backbone_is_checked_without_importing_torch(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text(
        "model:\n"
        "  class_path: ImageClassifier\n"
        "  init_args: {backbone: {class_path: SmallCNN, init_args: {width: 4}}}\n"
    )
    assert heavy_modules_after(["config", str(config)]) == []


def test_signature_data_is_what_regenerating_it_writes():
    assert DATA_FILE.read_text(encoding="utf-8") == signatures_json(signature_data()), (
        "ltrain/app/signatures.json is out of date: run `python -m ltrain.app.signatures`"
    )


def _shape(hint: typing.Any) -> typing.Any:
    """A hint with every class reduced to its dotted path: a stand-in and the class it names agree."""
    args = typing.get_args(hint)
    if args:
        origin = typing.get_origin(hint)
        union = origin is typing.Union or origin is types.UnionType  # `X | Y` or Union[X, Y]
        return ("Union" if union else _shape(origin), tuple(_shape(a) for a in args))
    return f"{hint.__module__}.{hint.__qualname__}" if isinstance(hint, type) else repr(hint)


@pytest.mark.parametrize("dotted", [*SHORT_NAMES.values(), TRAINER])
def test_signature_data_matches_the_imported_class(dotted):
    read = read_class(dotted)
    assert read is not None, f"{dotted} is not in the signature data: checking would import it"
    module, _, name = dotted.rpartition(".")
    cls = getattr(importlib.import_module(module), name)
    assert read.path == f"{cls.__module__}.{cls.__qualname__}"

    def described(parameters):
        return [(p.name, p.kind, repr(p.default)) for p in parameters.values()]

    assert described(read.signature.parameters) == described(inspect.signature(cls).parameters)
    hints = typing.get_type_hints(cls.__init__)
    hints.pop("return", None)
    assert {k: _shape(h) for k, h in read.hints.items()} == {k: _shape(h) for k, h in hints.items()}
    slots = [
        "ltrain.module.Module",
        "ltrain.data.datamodule.DataModule",
        "ltrain.callbacks.base.Callback",
        "ltrain.loggers.base.Logger",
        "torch.nn.modules.module.Module",  # the hint of ImageClassifier's backbone
    ]
    for slot in slots:
        slot_module, _, slot_name = slot.rpartition(".")
        slot_class = getattr(importlib.import_module(slot_module), slot_name)
        # "no" from the data only for ltrain's classes; an outside one is asked by importing
        no = False if slot.startswith("ltrain.") else None
        assert read.derives_from(slot) is (True if issubclass(cls, slot_class) else no), slot


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
        "from ltrain.app.cli import main\n"
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
