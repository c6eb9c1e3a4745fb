"""Tests of the Trainer's run lifecycle: what it prints and the process state it leaves behind."""

from __future__ import annotations

import logging
from typing import Any

import pytest
import torch
from boring import BoringModel, boring_loader, needs_cuda, quiet_trainer

import ltrain as pl

# most fits here have no val loader on purpose; one test checks that warning itself
pytestmark = pytest.mark.filterwarnings("ignore:You defined a validation_step:UserWarning")


def test_seed_everything_verbose_false_prints_nothing_and_still_seeds(capsys):
    assert pl.seed_everything(7, verbose=False) == 7
    first = torch.rand(3)
    pl.seed_everything(7, verbose=False)
    assert torch.equal(torch.rand(3), first)
    assert "Seed set to" not in capsys.readouterr().out


def test_start_of_fit_prints_seed_accelerator_device_and_summary(tmp_path, capsys):
    pl.seed_everything(0)
    trainer = quiet_trainer(tmp_path, max_epochs=1, enable_model_summary=True, logger=False)
    trainer.fit(BoringModel(), boring_loader(16, 8))
    out = capsys.readouterr().out
    assert "Seed set to 0" in out
    gpu = " (cuda)" if torch.cuda.is_available() else ""  # Lightning names the kind it found
    assert f"GPU available: {bool(gpu)}{gpu}, used: False" in out
    assert "Device: cpu, precision: 32-true" in out
    lines = out.splitlines()
    header = next(line for line in lines if "| Name" in line)
    assert [cell.strip() for cell in header.split("|")][1:4] == ["Name", "Type", "Params"]
    assert any(line.split("|")[1:4] == [" layer ", " Linear ", " 5      "] for line in lines)
    for label in (
        "Trainable params",
        "Non-trainable params",
        "Total params",
        "Total estimated model params size (MB)",
    ):
        assert any(line.endswith(label) for line in lines), label
    assert "5         Trainable params" in out
    assert "`Trainer.fit` stopped: `max_epochs=1` reached." in out


def test_console_lines_go_through_the_ltrain_logger(tmp_path, capsys):
    logging.getLogger("ltrain").setLevel(logging.WARNING)
    try:
        quiet_trainer(tmp_path, logger=False)
    finally:
        logging.getLogger("ltrain").setLevel(logging.INFO)
    assert "GPU available" not in capsys.readouterr().out


def test_a_second_trainer_starts_clean(tmp_path):
    model = BoringModel()
    first = quiet_trainer(tmp_path, max_epochs=2, logger=False)
    first.fit(model, boring_loader(16, 8), boring_loader(16, 8))
    assert first.global_step == 4 and "valid_loss" in first.callback_metrics

    second = quiet_trainer(tmp_path, max_epochs=1, logger=False)
    assert second.global_step == 0 and second.current_epoch == 0
    assert second.callback_metrics == {} and second.logged_metrics == {}
    second.fit(BoringModel(), boring_loader(16, 8))
    assert second.global_step == 2 and second.current_epoch == 1
    assert "valid_loss" not in second.callback_metrics
    assert first.global_step == 4


def test_deterministic_is_switched_off_again_after_the_run(tmp_path):
    seen: list[bool] = []

    class Watcher(BoringModel):
        def on_train_start(self) -> None:
            seen.append(torch.are_deterministic_algorithms_enabled())

    assert not torch.are_deterministic_algorithms_enabled()
    trainer = quiet_trainer(tmp_path, max_epochs=1, logger=False, deterministic=True)
    trainer.fit(Watcher(), boring_loader(16, 8))
    assert seen == [True]
    assert not torch.are_deterministic_algorithms_enabled()


def test_deterministic_is_switched_off_again_after_a_failed_run(tmp_path):
    class Failing(BoringModel):
        def training_step(self, batch: Any, batch_idx: int) -> Any:
            raise RuntimeError("boom")

    trainer = quiet_trainer(tmp_path, max_epochs=1, logger=False, deterministic=True)
    with pytest.raises(RuntimeError):
        trainer.fit(Failing(), boring_loader(16, 8))
    assert not torch.are_deterministic_algorithms_enabled()


def test_init_module_empty_init_skips_torch_nn_init_only_inside(tmp_path):
    trainer = quiet_trainer(tmp_path, logger=False)
    with trainer.init_module(empty_init=True):
        layer = torch.nn.Linear(3, 3)
        torch.nn.init.zeros_(layer.bias)  # skipped: the values stay what was allocated
        assert torch.ones(2).sum().item() == 2.0  # other torch functions run as usual
    torch.nn.init.zeros_(layer.bias)
    assert layer.bias.abs().sum().item() == 0.0


def test_state_and_accelerator_names_are_lightnings(tmp_path):
    from ltrain.trainer.states import RunningStage, TrainerFn, TrainerStatus

    trainer = quiet_trainer(tmp_path, logger=False, max_epochs=1)
    assert trainer.state.status == "initializing" and not trainer.interrupted
    trainer.fit(BoringModel(), boring_loader(16, 8))
    assert (trainer.state.fn, trainer.state.stage) == (TrainerFn.FITTING, None)
    assert trainer.state.finished and trainer.state.status is TrainerStatus.FINISHED
    assert RunningStage.SANITY_CHECKING.value == "sanity_check"
    assert isinstance(trainer.accelerator, pl.accelerators.CPUAccelerator)


@needs_cuda
def test_init_module_creates_parameters_on_the_gpu_in_a_true_precision(tmp_path):
    trainer = quiet_trainer(tmp_path, accelerator="cuda", devices=1, precision="bf16-true")
    with trainer.init_module():
        layer = torch.nn.Linear(2, 2)
    assert (layer.weight.device.type, layer.weight.dtype) == ("cuda", torch.bfloat16)
    assert type(trainer.accelerator).__name__ == "CUDAAccelerator"
