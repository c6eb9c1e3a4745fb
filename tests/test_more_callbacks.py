"""Tests of the callbacks issue 15 adds: what they are called with, what they leave behind."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from boring import BoringModel, boring_loader, quiet_trainer
from torch.utils.data import DataLoader, TensorDataset

from ltrain.callbacks import BasePredictionWriter
from ltrain.errors import MisconfigurationException


class Predicts(BoringModel):
    def predict_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> Any:
        return self(batch[0])


class Recorder(BasePredictionWriter):
    def __init__(self, write_interval: Any) -> None:
        super().__init__(write_interval)
        self.seen: list[tuple] = []

    def write_on_batch_end(
        self, trainer, pl_module, prediction, batch_indices, batch, batch_idx, dataloader_idx
    ) -> None:
        self.seen.append(("batch", len(prediction), batch_indices, batch_idx, dataloader_idx))

    def write_on_epoch_end(self, trainer, pl_module, predictions, batch_indices) -> None:
        self.seen.append(("epoch", len(predictions), batch_indices))


def test_batch_writer_gets_each_batch_sample_indices_and_nothing_is_kept(tmp_path) -> None:
    writer = Recorder("batch")
    data = DataLoader(TensorDataset(torch.randn(10, 4)), batch_size=4)
    run = quiet_trainer(tmp_path, logger=False, callbacks=[writer])
    assert run.predict(Predicts(), data, return_predictions=False) is None
    assert writer.seen == [
        ("batch", 4, [0, 1, 2, 3], 0, 0),
        ("batch", 4, [4, 5, 6, 7], 1, 0),
        ("batch", 2, [8, 9], 2, 0),
    ]
    assert writer._record.predictions == []


def test_epoch_writer_gets_every_loader_predictions_and_indices(tmp_path) -> None:
    writer = Recorder("epoch")
    loaders = [boring_loader(6, batch_size=4), boring_loader(3, batch_size=2, shuffle=True)]
    run = quiet_trainer(tmp_path, logger=False, callbacks=[writer])
    assert run.predict(Predicts(), loaders, return_predictions=False) is None
    ((kind, count, indices),) = writer.seen
    assert (kind, count) == ("epoch", 2)
    assert indices[0] == [[0, 1, 2, 3], [4, 5]]
    assert sorted(i for batch in indices[1] for i in batch) == [0, 1, 2]


def test_write_interval_is_checked() -> None:
    with pytest.raises(MisconfigurationException, match="should be one of"):
        Recorder("step")
