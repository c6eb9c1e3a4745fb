"""`torch.compile`: a compiled module given to fit, a submodule compiled in configure_model, the
compile time said in one line; checkpoints hold Lightning's keys (tests/parity has both against
Lightning). Inductor compiles on this CPU in seconds; one test uses it, the rest the eager backend."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from boring import BoringModel, boring_loader

import ltrain as pl
from ltrain.errors import MisconfigurationException


def _fit(tmp_path: Path, model: object, epochs: int = 2) -> pl.Trainer:
    trainer = pl.Trainer(
        max_epochs=epochs, default_root_dir=tmp_path, logger=False, enable_progress_bar=False,
        enable_model_summary=False, num_sanity_val_steps=0,
    )  # fmt: skip
    trainer.fit(model, boring_loader(), boring_loader(samples=16))
    return trainer


def _checkpoint_weights(trainer: pl.Trainer) -> dict[str, torch.Tensor]:
    path = trainer.checkpoint_callback.best_model_path
    return torch.load(path, weights_only=True)["state_dict"]


def test_a_compiled_module_trains_compiled_and_saves_its_own_keys(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    torch.manual_seed(0)
    plain = BoringModel()
    torch.manual_seed(0)
    model = BoringModel()
    _fit(tmp_path / "plain", plain)
    capsys.readouterr()
    trainer = _fit(tmp_path / "compiled", torch.compile(model))  # inductor, on the CPU
    out = capsys.readouterr().out
    assert trainer.lightning_module is model
    assert "_uncompiled_methods" in vars(model)  # forward and the steps ran through dynamo
    assert len(re.findall(r"torch\.compile: the first training step took [\d.]+ s", out)) == 1
    weights = _checkpoint_weights(trainer)
    assert list(weights) == ["layer.weight", "layer.bias"]
    for name, value in plain.state_dict().items():
        torch.testing.assert_close(weights[name], value)


def test_compiling_a_submodule_in_configure_model(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    class Compiles(BoringModel):
        def configure_model(self) -> None:
            self.layer = torch.compile(self.layer, backend="eager")

    model = Compiles()
    trainer = _fit(tmp_path, model, epochs=1)
    assert "torch.compile: the first training step took" in capsys.readouterr().out
    assert list(_checkpoint_weights(trainer)) == ["layer._orig_mod.weight", "layer._orig_mod.bias"]
    _fit(tmp_path, BoringModel(), epochs=1)
    assert "torch.compile" not in capsys.readouterr().out


def test_validate_takes_a_compiled_module_and_refuses_a_compiled_plain_module() -> None:
    model = BoringModel()
    trainer = pl.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False)
    (metrics,) = trainer.validate(torch.compile(model, backend="eager"), boring_loader())
    assert "valid_loss" in metrics and trainer.lightning_module is model
    with pytest.raises(MisconfigurationException, match=r"torch.compile\(\) of a Linear"):
        trainer.fit(torch.compile(torch.nn.Linear(2, 1), backend="eager"))
