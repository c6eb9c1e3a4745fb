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
