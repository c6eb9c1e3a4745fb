"""A user's DataModule through the trainer: its hyperparameters in hparams.yaml and checkpoints, its
state in checkpoints, as Lightning keeps them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from boring import BoringModel, boring_loader, quiet_trainer

import ltrain as pl

# the boring module has a validation_step; these runs train without validation data
pytestmark = pytest.mark.filterwarnings("ignore:You defined a validation_step")


class Data(pl.LightningDataModule):
    """Regression batches; saves its arguments and keeps a counter as its state."""

    def __init__(self, batch_size: int = 8, samples: int = 32) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.loaded: dict[str, Any] | None = None

    def train_dataloader(self) -> Any:
        return boring_loader(self.hparams.samples, self.hparams.batch_size)

    def test_dataloader(self) -> Any:
        return boring_loader(16, self.hparams.batch_size)

    def state_dict(self) -> dict[str, Any]:
        return {"seen": 3}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.loaded = state_dict


class WithHparams(BoringModel):
    def __init__(self, lr: float = 0.1, batch_size: int = 8) -> None:
        super().__init__(lr=lr)
        self.save_hyperparameters()


def fit(tmp_path: Path, model: pl.LightningModule, data: pl.LightningDataModule) -> pl.Trainer:
    trainer = quiet_trainer(
        tmp_path, max_epochs=1, logger=pl.loggers.CSVLogger(tmp_path, name="run")
    )
    trainer.fit(model, datamodule=data)
    return trainer


def hparams_yaml(tmp_path: Path) -> dict[str, Any]:
    return yaml.safe_load((tmp_path / "run" / "version_0" / "hparams.yaml").read_text())


def test_save_hyperparameters_keeps_the_init_arguments_as_hparams():
    data = Data(batch_size=4)

    assert data.hparams == {"batch_size": 4, "samples": 32}
    assert data.hparams.batch_size == 4
    assert data.hparams_initial == {"batch_size": 4, "samples": 32}


def test_hparams_yaml_holds_the_modules_and_the_datamodules_hyperparameters(tmp_path):
    fit(tmp_path, WithHparams(lr=0.05), Data(samples=24))

    assert hparams_yaml(tmp_path) == {"batch_size": 8, "lr": 0.05, "samples": 24}


def test_hparams_yaml_holds_the_datamodules_alone_when_the_module_saved_none(tmp_path):
    fit(tmp_path, BoringModel(), Data(samples=24))

    assert hparams_yaml(tmp_path) == {"batch_size": 8, "samples": 24}


def test_a_key_both_save_with_different_values_is_refused_naming_it(tmp_path):
    with pytest.raises(RuntimeError, match=r"hyperparameters \['batch_size'\] are saved by both"):
        fit(tmp_path, WithHparams(batch_size=16), Data(batch_size=8))


def test_checkpoint_holds_the_datamodules_hyperparameters_and_state(tmp_path):
    trainer = fit(tmp_path, BoringModel(), Data(samples=24))

    (path,) = (tmp_path / "run" / "version_0" / "checkpoints").glob("*.ckpt")
    checkpoint = torch.load(path, weights_only=True)
    assert checkpoint["datamodule_hyper_parameters"] == {"batch_size": 8, "samples": 24}
    assert checkpoint["Data"] == {"seen": 3}
    assert trainer.datamodule.loaded is None


def test_the_datamodules_state_comes_back_from_a_checkpoint(tmp_path):
    trainer = fit(tmp_path, BoringModel(), Data())
    data = Data()

    trainer.test(BoringModel(), datamodule=data, ckpt_path="best", verbose=False)

    assert data.loaded == {"seen": 3}


class Recorded(pl.LightningDataModule):
    """Records the trainer's calls of its hooks, as the user sees them."""

    def __init__(self, calls: list[str]) -> None:
        super().__init__()
        self.calls = calls

    def prepare_data(self) -> None:
        self.calls.append("prepare_data")

    def setup(self, stage: str) -> None:
        self.calls.append(f"setup({stage})")

    def train_dataloader(self) -> Any:
        self.calls.append("train_dataloader")
        return boring_loader(16, 8)

    def val_dataloader(self) -> Any:
        self.calls.append("val_dataloader")
        return boring_loader(8, 8)

    def on_before_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        self.calls.append(f"batch({dataloader_idx})")
        return batch

    def teardown(self, stage: str) -> None:
        self.calls.append(f"teardown({stage})")


class RecordingModel(BoringModel):
    def __init__(self, calls: list[str]) -> None:
        super().__init__()
        self.calls = calls

    def configure_optimizers(self) -> Any:
        self.calls.append("configure_optimizers")
        return super().configure_optimizers()

    def on_fit_start(self) -> None:
        self.calls.append("on_fit_start")

    def on_train_start(self) -> None:
        self.calls.append("on_train_start")


def test_fit_asks_for_the_val_loader_for_the_sanity_check_and_the_train_loader_after_it(tmp_path):
    calls: list[str] = []
    trainer = quiet_trainer(tmp_path, max_epochs=1, logger=False, enable_checkpointing=False)

    trainer.fit(RecordingModel(calls), datamodule=Recorded(calls))

    assert calls == [
        "prepare_data", "setup(fit)", "configure_optimizers", "on_fit_start",
        "val_dataloader", "batch(0)",  # the sanity check
        "train_dataloader", "on_train_start", "batch(0)", "batch(0)", "batch(0)",
        "teardown(fit)",
    ]  # fmt: skip


def test_without_a_sanity_check_the_loaders_are_asked_for_before_on_train_start(tmp_path):
    calls: list[str] = []
    trainer = quiet_trainer(
        tmp_path, max_epochs=1, logger=False, enable_checkpointing=False, num_sanity_val_steps=0
    )

    trainer.fit(RecordingModel(calls), datamodule=Recorded(calls))

    assert calls[3:6] == ["on_fit_start", "train_dataloader", "val_dataloader"]
    assert calls[6] == "on_train_start"


def test_without_a_validation_step_the_val_loader_is_never_asked_for(tmp_path):
    class NoValidation(RecordingModel):
        validation_step = None  # as if never defined

    calls: list[str] = []
    trainer = quiet_trainer(tmp_path, max_epochs=1, logger=False, enable_checkpointing=False)

    trainer.fit(NoValidation(calls), datamodule=Recorded(calls))

    assert "val_dataloader" not in calls


def test_estimated_stepping_batches_in_configure_optimizers_asks_for_the_train_loader(tmp_path):
    class OneCycle(RecordingModel):
        def configure_optimizers(self) -> Any:
            optimizer = super().configure_optimizers()
            total = self.trainer.estimated_stepping_batches
            self.calls.append(f"total={total}")
            return {
                "optimizer": optimizer,
                "lr_scheduler": torch.optim.lr_scheduler.OneCycleLR(optimizer, 0.1, total),
            }

    calls: list[str] = []
    trainer = quiet_trainer(tmp_path, max_epochs=3, logger=False, enable_checkpointing=False)

    trainer.fit(OneCycle(calls), datamodule=Recorded(calls))

    assert calls[2:5] == ["configure_optimizers", "train_dataloader", "total=6"]
    assert calls.count("train_dataloader") == 1


def test_a_datamodules_transfer_batch_to_device_moves_its_batches(tmp_path):
    class Moves(Recorded):
        def transfer_batch_to_device(self, batch: Any, device: Any, dataloader_idx: int) -> Any:
            self.calls.append(f"transfer({dataloader_idx})")
            return super().transfer_batch_to_device(batch, device, dataloader_idx)

    calls: list[str] = []
    trainer = quiet_trainer(tmp_path, max_epochs=1, logger=False, enable_checkpointing=False)

    trainer.fit(BoringModel(), datamodule=Moves(calls))

    assert calls.count("transfer(0)") == 4  # sanity check, two training batches, validation
    assert calls.index("batch(0)") + 1 == calls.index("transfer(0)")
