"""Tests of where the Trainer's data comes from: arguments, a datamodule, or the module's own hooks."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from boring import BoringModel, boring_loader, quiet_trainer

import ltrain as pl
from ltrain.errors import MisconfigurationException

# most fits here have no val loader on purpose; one test checks that warning itself
pytestmark = pytest.mark.filterwarnings("ignore:You defined a validation_step:UserWarning")


class RecordingDataModule(pl.LightningDataModule):
    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []

    def prepare_data(self) -> None:
        self.calls.append("prepare_data")

    def setup(self, stage: str) -> None:
        self.calls.append(f"setup:{stage}")

    def teardown(self, stage: str) -> None:
        self.calls.append(f"teardown:{stage}")

    def train_dataloader(self) -> Any:
        return boring_loader(16, 8)

    def val_dataloader(self) -> Any:
        return boring_loader(16, 8)

    def test_dataloader(self) -> Any:
        return boring_loader(8, 8)

    def predict_dataloader(self) -> Any:
        return boring_loader(8, 4)

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        x, y = batch
        return x, y, torch.full((len(x),), 7)


class NeedsTransferredBatch(BoringModel):
    """Fails unless the datamodule's on_after_batch_transfer added a third tensor of 7s."""

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        assert torch.all(batch[2] == 7)
        return super().training_step(batch[:2], batch_idx)

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        assert torch.all(batch[2] == 7)
        super().validation_step(batch[:2], batch_idx)

    def test_step(self, batch: Any, batch_idx: int) -> None:
        assert torch.all(batch[2] == 7)
        super().test_step(batch[:2], batch_idx)

    def predict_step(self, batch: Any, batch_idx: int) -> Any:
        return batch[2]


def test_datamodule_hooks_run_per_stage_and_its_batch_hook_is_used(tmp_path):
    datamodule = RecordingDataModule()
    model = NeedsTransferredBatch()
    trainer = quiet_trainer(tmp_path, max_epochs=1, logger=False)
    trainer.fit(model, datamodule=datamodule)
    trainer.validate(model, datamodule=datamodule, verbose=False)
    trainer.test(model, datamodule=datamodule, verbose=False)
    predictions = trainer.predict(model, datamodule)
    assert datamodule.calls == [
        "prepare_data",
        "setup:fit",
        "teardown:fit",
        "prepare_data",
        "setup:validate",
        "teardown:validate",
        "prepare_data",
        "setup:test",
        "teardown:test",
        "prepare_data",
        "setup:predict",
        "teardown:predict",
    ]
    assert [p.tolist() for p in predictions] == [[7] * 4, [7] * 4]
    assert datamodule.trainer is trainer


def test_fit_without_any_training_data_says_where_it_can_come_from(tmp_path):
    trainer = quiet_trainer(tmp_path, logger=False)
    with pytest.raises(MisconfigurationException, match="train_dataloader"):
        trainer.fit(BoringModel())
