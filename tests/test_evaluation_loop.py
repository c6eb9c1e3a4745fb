"""Tests of validate / test / predict: return values per dataloader and the printed results table."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from boring import BoringModel, boring_loader, quiet_trainer
from torch.nn import functional as F

# most fits here have no val loader on purpose; one test checks that warning itself
pytestmark = pytest.mark.filterwarnings("ignore:You defined a validation_step:UserWarning")


def test_predict_returns_what_predict_step_returned_per_batch(tmp_path):
    class Predictor(BoringModel):
        def predict_step(self, batch: Any, batch_idx: int) -> Any:
            return {"index": batch_idx, "y": self(batch[0])}

    trainer = quiet_trainer(tmp_path, logger=False)
    predictions = trainer.predict(Predictor(), boring_loader(20, 8))
    assert [p["index"] for p in predictions] == [0, 1, 2]
    assert [p["y"].shape for p in predictions] == [(8, 1), (8, 1), (4, 1)]


def test_predict_with_return_predictions_false_returns_none(tmp_path):
    trainer = quiet_trainer(tmp_path, logger=False)
    assert trainer.predict(BoringModel(), boring_loader(16, 8), return_predictions=False) is None


class TwoLoaderModel(BoringModel):
    def test_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        super().test_step(batch, batch_idx)


def test_validate_and_test_return_one_dict_of_floats_per_dataloader(tmp_path):
    trainer = quiet_trainer(tmp_path, logger=False)
    model = TwoLoaderModel()
    validated = trainer.validate(model, boring_loader(16, 8), verbose=False)
    tested = trainer.test(model, [boring_loader(16, 8), boring_loader(8, 8)], verbose=False)
    assert isinstance(validated, list) and list(validated[0]) == ["valid_loss"]
    assert isinstance(validated[0]["valid_loss"], float)
    assert [list(d) for d in tested] == [
        ["test_loss/dataloader_idx_0"],
        ["test_loss/dataloader_idx_1"],
    ]


def test_several_loaders_need_a_dataloader_idx_argument_in_the_step(tmp_path):
    trainer = quiet_trainer(tmp_path, logger=False)
    with pytest.raises(
        RuntimeError, match=r"multiple `test_dataloader`.*BoringModel.test_step\(\)"
    ):
        trainer.test(BoringModel(), [boring_loader(16, 8), boring_loader(8, 8)])


def test_validate_value_is_the_batch_size_weighted_mean(tmp_path):
    x, y = boring_loader(12, 8).tensors
    model = BoringModel()
    with torch.no_grad():
        expected = F.mse_loss(model(x), y).item()
    trainer = quiet_trainer(tmp_path, logger=False)
    [metrics] = trainer.validate(model, boring_loader(12, 8), verbose=False)
    assert metrics["valid_loss"] == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("verb, title", [("validate", "Validate"), ("test", "Test")])
def test_evaluation_prints_a_table_of_metrics_per_dataloader(tmp_path, capsys, verb, title):
    trainer = quiet_trainer(tmp_path, logger=False)
    [metrics] = getattr(trainer, verb)(BoringModel(), boring_loader(16, 8))
    out = capsys.readouterr().out
    header = next(line for line in out.splitlines() if f"{title} metric" in line)
    assert header.split() == [title, "metric", "DataLoader", "0"]
    [(name, value)] = metrics.items()
    row = next(line for line in out.splitlines() if name in line)
    assert row.split() == [name, repr(value)]


def test_evaluation_with_verbose_false_prints_no_table(tmp_path, capsys):
    trainer = quiet_trainer(tmp_path, logger=False)
    trainer.validate(BoringModel(), boring_loader(16, 8), verbose=False)
    assert "Validate metric" not in capsys.readouterr().out


class FrozenDropout(BoringModel):
    """A dropout kept in eval mode by the user, around the linear layer."""

    def __init__(self) -> None:
        super().__init__()
        self.dropout = torch.nn.Dropout(0.5)
        self.dropout.eval()
        self.modes: list[tuple[bool, bool]] = []  # (module, dropout) at each training batch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(self.dropout(x))

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        self.modes.append((self.training, self.dropout.training))


def test_evaluation_puts_back_each_submodules_mode_as_lightning_does(tmp_path):
    # Lightning records every submodule's mode before evaluating and restores each after;
    # a `train()` afterwards would switch the frozen dropout back on
    model = FrozenDropout()
    trainer = quiet_trainer(tmp_path, max_epochs=2, logger=False, enable_checkpointing=False)
    trainer.fit(model, boring_loader(16, 8), boring_loader(8, 8))
    assert model.modes == [(True, False)] * 4
    for run in (trainer.validate, trainer.test, trainer.predict):
        run(model, boring_loader(8, 8))
        assert (model.training, model.dropout.training) == (True, False)


def test_an_overridden_model_train_hook_replaces_the_restore(tmp_path):
    calls: list[str] = []

    class OwnModes(FrozenDropout):
        def on_validation_model_eval(self) -> None:
            calls.append("eval")
            super().on_validation_model_eval()

        def on_validation_model_train(self) -> None:
            calls.append("train")
            self.train()  # the user's choice: everything back to training

    model = OwnModes()
    trainer = quiet_trainer(tmp_path, logger=False)
    trainer.validate(model, boring_loader(8, 8), verbose=False)
    assert calls == ["eval", "train"]
    assert (model.training, model.dropout.training) == (True, True)
