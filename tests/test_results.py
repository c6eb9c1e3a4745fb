"""What `self.log` does with a value: defaults per hook, epoch aggregation, and where the value shows up.

The values users see are checked in metrics.csv (the exact float text), in `trainer.callback_metrics`
and `trainer.logged_metrics`, and in what `validate()` / `test()` return.
"""

from __future__ import annotations

import collections
import csv
import dataclasses
from pathlib import Path
from typing import Any

import pytest
import torch
import torchmetrics
from boring import BoringModel, boring_loader, quiet_trainer
from torch.nn import functional as F

import ltrain as pl
from ltrain.batch import infer_batch_size
from ltrain.errors import MisconfigurationException
from ltrain.results import Results

# BoringModel has a validation_step; most runs here train without validation data
pytestmark = pytest.mark.filterwarnings("ignore:You defined a validation_step")

# ---------------------------------------------------------------------- helpers


def fit(
    tmp_path: Path,
    model: pl.LightningModule,
    samples: int = 16,
    batch_size: int = 4,
    val: Any = None,
    **trainer_kwargs: Any,
) -> pl.Trainer:
    options = {"max_epochs": 1, "enable_checkpointing": False, "log_every_n_steps": 1}
    options.update(trainer_kwargs)
    trainer = quiet_trainer(tmp_path, **options)
    trainer.fit(model, boring_loader(samples=samples, batch_size=batch_size), val)
    return trainer


def csv_rows(trainer: pl.Trainer) -> list[dict[str, str]]:
    with open(Path(trainer.logger.log_dir) / "metrics.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def column(rows: list[dict[str, str]], key: str) -> list[str]:
    """The non-empty cells of one column, as text."""
    return [row[key] for row in rows if row.get(key)]


def written(value: torch.Tensor | float) -> str:
    return repr(float(value))


def weighted_mean(values: list[torch.Tensor], sizes: list[int]) -> torch.Tensor:
    """Lightning's epoch mean: sum of value * batch size in float32, divided once."""
    total = torch.tensor(0.0)
    for value, size in zip(values, sizes, strict=True):
        total = total + value * size
    return total / sum(sizes)


class Recorder(BoringModel):
    """Logs `train_loss` from training_step with the given options and records what it logged."""

    def __init__(self, **log_options: Any) -> None:
        super().__init__()
        self.log_options = log_options
        self.losses: list[torch.Tensor] = []
        self.sizes: list[int] = []

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = F.mse_loss(self(x), y)
        self.log("train_loss", loss, **self.log_options)
        self.losses.append(loss.detach().clone())
        self.sizes.append(len(x))
        return loss


# ---------------------------------------------------------------------- epoch aggregation


def test_epoch_value_is_batch_size_weighted_mean(tmp_path):
    model = Recorder(on_step=False, on_epoch=True)
    trainer = fit(tmp_path, model, samples=10, batch_size=4)

    assert model.sizes == [4, 4, 2]
    expected = weighted_mean(model.losses, [4, 4, 2])
    assert column(csv_rows(trainer), "train_loss") == [written(expected)]
    assert float(trainer.callback_metrics["train_loss"]) == float(expected)
    plain_mean = sum(model.losses) / 3
    assert float(expected) != pytest.approx(float(plain_mean), rel=1e-6)


def test_epoch_mean_of_varying_batch_sizes_is_lightnings_to_the_last_bit(tmp_path):
    # Lightning adds `value * batch_size` to the sum (two roundings); a fused multiply-add
    # rounds once, and these seven values and sizes then give a mean one bit away
    values = torch.rand(7, generator=torch.Generator().manual_seed(0)) * 3
    sizes = [3 + 2 * i for i in range(7)]

    class Varying(BoringModel):
        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            value = values[batch_idx]
            self.log("value", value, on_step=False, on_epoch=True, batch_size=sizes[batch_idx])
            return super().training_step(batch, batch_idx)

    trainer = fit(tmp_path, Varying(), samples=7, batch_size=1)

    assert torch.equal(trainer.callback_metrics["value"], weighted_mean(list(values), sizes))


def test_batch_size_argument_overrides_the_inferred_batch_size(tmp_path):
    model = Recorder(on_step=False, on_epoch=True, batch_size=1)
    trainer = fit(tmp_path, model, samples=10, batch_size=4)

    expected = weighted_mean(model.losses, [1, 1, 1])
    assert column(csv_rows(trainer), "train_loss") == [written(expected)]


def test_batch_size_is_inferred_from_the_first_tensor_of_a_dict_batch(tmp_path):
    class DictBatches(Recorder):
        def training_step(self, batch, batch_idx):
            return super().training_step((batch["x"], batch["y"]), batch_idx)

    class DictLoader:
        def __init__(self) -> None:
            self.inner = boring_loader(samples=10, batch_size=4)

        def __len__(self) -> int:
            return len(self.inner)

        def __iter__(self):
            return ({"x": x, "y": y} for x, y in self.inner)

    model = DictBatches(on_step=False, on_epoch=True)
    trainer = quiet_trainer(tmp_path, max_epochs=1, enable_checkpointing=False)
    trainer.fit(model, DictLoader())

    expected = weighted_mean(model.losses, [4, 4, 2])
    assert column(csv_rows(trainer), "train_loss") == [written(expected)]


@dataclasses.dataclass
class _Fields:
    name: str
    x: torch.Tensor


@pytest.mark.parametrize(
    ("batch", "size"),
    [
        ({"text": ["word"] * 4, "x": torch.zeros(4)}, 4),  # strings are skipped
        (("a string", 3, torch.zeros(5)), 5),
        ((torch.tensor(2.0), torch.zeros(5)), 1),
        ({"deep": [{"x": torch.zeros(3)}], "y": torch.zeros(5)}, 3),
        (_Fields("name", torch.zeros(6)), 6),
        ((collections.deque([torch.zeros(2)]), torch.zeros(5)), 2),
        (((t for t in [torch.zeros(7)]), torch.zeros(5)), 7),
        (None, 1),  # no batch: an epoch-end hook
    ],
)
def test_batch_size_is_the_first_tensors_length_anywhere_in_the_batch(batch, size):
    assert infer_batch_size(batch) == size


def test_a_batch_without_a_tensor_has_no_size_to_infer():
    with pytest.raises(MisconfigurationException, match="could not infer the batch_size"):
        infer_batch_size({"x": [1.0, 2.0], "name": "a"})


@pytest.mark.parametrize(
    ("reduce_fx", "reduce"),
    [
        ("sum", lambda values: sum(values[1:], values[0])),
        ("max", lambda values: max(values)),
        ("min", lambda values: min(values)),
        (torch.max, lambda values: max(values)),
        # as in Lightning: a name in any case, 'avg', torch's and Python's functions
        ("SUM", lambda values: sum(values[1:], values[0])),
        ("Min", lambda values: min(values)),
        (torch.sum, lambda values: sum(values[1:], values[0])),
        (torch.min, lambda values: min(values)),
        (max, lambda values: max(values)),
        ("AVG", lambda values: weighted_mean(values, [4, 4, 2])),
        (torch.mean, lambda values: weighted_mean(values, [4, 4, 2])),
    ],
)
def test_reduce_fx_sum_max_min_reduce_the_epoch(tmp_path, reduce_fx, reduce):
    model = Recorder(on_step=False, on_epoch=True, reduce_fx=reduce_fx)
    trainer = fit(tmp_path, model, samples=10, batch_size=4)

    assert column(csv_rows(trainer), "train_loss") == [written(reduce(model.losses))]


def test_unknown_reduce_fx_is_a_clear_error(tmp_path):
    with pytest.raises(MisconfigurationException, match="reduce_fx='median'"):
        fit(tmp_path, Recorder(reduce_fx="median"))


class WithMetric(BoringModel):
    """Logs a torchmetrics object per step and epoch; keeps each batch's inputs to recompute it."""

    def __init__(self) -> None:
        super().__init__()
        self.mae = torchmetrics.MeanAbsoluteError()
        self.step_values: list[torch.Tensor] = []
        self.batches: list[tuple[torch.Tensor, torch.Tensor]] = []

    def training_step(self, batch, batch_idx):
        x, y = batch
        preds = self(x)
        self.step_values.append(self.mae(preds, y).detach().clone())
        self.batches.append((preds.detach().clone(), y.clone()))
        self.log("mae", self.mae, on_step=True, on_epoch=True)
        return F.mse_loss(preds, y)


def test_torchmetrics_metric_epoch_value_is_compute_over_the_epoch_and_step_value_the_batch(
    tmp_path,
):
    model = WithMetric()
    trainer = fit(tmp_path, model, samples=10, batch_size=4, max_epochs=2)

    rows = csv_rows(trainer)
    assert column(rows, "mae_step") == [written(v) for v in model.step_values]
    expected_epochs = []
    for epoch in range(2):
        fresh = torchmetrics.MeanAbsoluteError()
        for preds, target in model.batches[3 * epoch : 3 * epoch + 3]:
            fresh.update(preds, target)
        expected_epochs.append(written(fresh.compute()))
    # the metric is reset after each epoch: epoch 1 does not include epoch 0's samples
    assert column(rows, "mae_epoch") == expected_epochs
    assert float(trainer.callback_metrics["mae"]) == float(expected_epochs[1])


# ---------------------------------------------------------------------- callback and logged metrics


def test_callback_metrics_hold_the_step_value_until_the_epoch_value_exists(tmp_path):
    seen: list[dict[str, float]] = []

    class Watch(pl.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            seen.append({k: float(v) for k, v in trainer.callback_metrics.items()})

    model = Recorder(on_step=True, on_epoch=True)
    trainer = fit(tmp_path, model, samples=12, batch_size=4, callbacks=[Watch()])

    for values, loss in zip(seen, model.losses, strict=True):
        assert values == {"train_loss": float(loss), "train_loss_step": float(loss)}
    epoch_value = float(weighted_mean(model.losses, [4, 4, 4]))
    assert trainer.callback_metrics["train_loss"].item() == epoch_value
    assert trainer.callback_metrics["train_loss_epoch"].item() == epoch_value


def test_callback_metrics_hold_bare_names_with_the_latest_epoch_value(tmp_path):
    model = Recorder(on_step=True, on_epoch=True)
    trainer = fit(tmp_path, model, samples=8, batch_size=4, max_epochs=3, val=boring_loader(8))

    latest = float(weighted_mean(model.losses[-2:], [4, 4]))
    assert float(trainer.callback_metrics["train_loss"]) == latest
    rows = csv_rows(trainer)
    assert written(trainer.callback_metrics["valid_loss"]) == column(rows, "valid_loss")[-1]
    assert {"train_loss", "train_loss_epoch", "valid_loss"} <= set(trainer.callback_metrics)


def test_logged_metrics_hold_the_suffixed_names_sent_to_the_logger(tmp_path):
    model = Recorder(on_step=True, on_epoch=True)
    trainer = fit(tmp_path, model, samples=8, batch_size=4, val=boring_loader(8))

    assert set(trainer.logged_metrics) == {"train_loss_step", "train_loss_epoch", "valid_loss"}
    rows = csv_rows(trainer)
    for key, value in trainer.logged_metrics.items():
        assert written(value) == column(rows, key)[-1]


def test_logged_metrics_hold_each_batchs_tensors_as_the_batch_ends(tmp_path):
    # Lightning updates logged_metrics at every batch end, not only when a row is written
    # (log_every_n_steps=50 writes none here), and with no logger at all; ltrain keeps the
    # tensors themselves, so no value is read back from the device per batch
    seen: list[torch.Tensor] = []

    class Watch(pl.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            seen.append(trainer.logged_metrics["train_loss"])

    model = Recorder()
    fit(tmp_path, model, samples=12, batch_size=4, logger=False, log_every_n_steps=50,
        callbacks=[Watch()])  # fmt: skip
    assert all(isinstance(value, torch.Tensor) for value in seen)
    assert [float(v) for v in seen] == [float(loss) for loss in model.losses]


def test_a_name_logged_in_an_earlier_batch_stays_in_later_rows(tmp_path):
    # Lightning's step rows hold the latest value of every name logged on step in the epoch
    class Sometimes(Recorder):
        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            if batch_idx == 0:
                self.log("first_batch_only", 7.0)
            return super().training_step(batch, batch_idx)

    trainer = fit(tmp_path, Sometimes(), samples=12, batch_size=4, max_epochs=2)
    rows = csv_rows(trainer)
    assert column(rows, "first_batch_only") == ["7.0"] * 6


def test_values_logged_in_on_train_start_reach_the_first_epoch_row(tmp_path):
    class AtStart(Recorder):
        def on_train_start(self) -> None:
            self.log("at_start", 3.0)

    trainer = fit(tmp_path, AtStart(), samples=8, batch_size=4, max_epochs=2)
    rows = csv_rows(trainer)
    assert [(row["epoch"], row["at_start"]) for row in rows if row["at_start"]] == [("0", "3.0")]
    assert float(trainer.logged_metrics["at_start"]) == 3.0


def test_a_modules_own_backward_may_log(tmp_path):
    class LogsInBackward(Recorder):
        def backward(self, loss: torch.Tensor, *args: Any, **kwargs: Any) -> None:
            self.log("backward_loss", loss)
            loss.backward(*args, **kwargs)

    model = LogsInBackward()
    trainer = fit(tmp_path, model, samples=8, batch_size=4)
    assert column(csv_rows(trainer), "backward_loss") == [written(v) for v in model.losses]


def test_a_logged_metric_can_still_be_computed_in_the_epoch_end_hooks(tmp_path):
    # Lightning resets a logged torchmetrics object after the run's last row, not when it
    # computes the epoch value: on_*_epoch_end may still compute() it
    computed: dict[str, float] = {}

    class ComputesAtEnd(WithMetric):
        def validation_step(self, batch: Any, batch_idx: int) -> None:
            x, y = batch
            self.val_mae.update(self(x), y)
            self.log("val_mae", self.val_mae)

        def on_validation_epoch_end(self) -> None:
            if not self.trainer.sanity_checking:
                computed["validation"] = float(self.val_mae.compute())

        def on_train_epoch_end(self) -> None:
            computed["training"] = float(self.mae.compute())

    model = ComputesAtEnd()
    model.val_mae = torchmetrics.MeanAbsoluteError()
    trainer = fit(tmp_path, model, samples=8, batch_size=4, val=boring_loader(8))
    assert computed == {
        "training": float(trainer.callback_metrics["mae_epoch"]),
        "validation": float(trainer.callback_metrics["val_mae"]),
    }
    assert model.val_mae._update_count == 0 and model.mae._update_count == 0  # reset after


def test_logger_false_keeps_a_value_out_of_the_csv_but_in_callback_metrics(tmp_path):
    model = Recorder(logger=False)
    trainer = fit(tmp_path, model, samples=8, batch_size=4)

    assert not (Path(trainer.logger.log_dir) / "metrics.csv").exists()
    assert float(trainer.callback_metrics["train_loss"]) == float(model.losses[-1])


# ---------------------------------------------------------------------- defaults and errors per hook


def test_training_step_logs_on_step_only_by_default(tmp_path):
    model = Recorder()
    trainer = fit(tmp_path, model, samples=12, batch_size=4)

    rows = csv_rows(trainer)
    assert list(rows[0]) == ["epoch", "step", "train_loss"]
    assert [row["step"] for row in rows] == ["0", "1", "2"]
    assert column(rows, "train_loss") == [written(v) for v in model.losses]


def test_validation_and_test_step_log_on_epoch_only_by_default(tmp_path):
    trainer = fit(tmp_path, Recorder(), samples=8, batch_size=4, val=boring_loader(24))
    trainer.test(dataloaders=boring_loader(24), verbose=False)

    rows = csv_rows(trainer)
    assert len(column(rows, "valid_loss")) == 1
    assert len(column(rows, "test_loss")) == 1
    assert "valid_loss_step" not in rows[0] and "test_loss_epoch" not in rows[0]


def test_on_train_epoch_end_logs_on_epoch_by_default(tmp_path):
    class EpochEnd(Recorder):
        def on_train_epoch_end(self):
            self.log("epoch_total", float(len(self.losses)))

    trainer = fit(tmp_path, EpochEnd(), samples=8, batch_size=4, max_epochs=2)

    rows = csv_rows(trainer)
    assert column(rows, "epoch_total") == ["2.0", "4.0"]
    assert [row["step"] for row in rows if row["epoch_total"]] == ["1", "3"]


def test_one_name_logged_from_two_hooks_keeps_the_latest_value(tmp_path):
    class EpochEndToo(Recorder):
        def on_train_epoch_end(self):
            self.log("train_loss", 100.0)

    model = EpochEndToo()
    trainer = fit(tmp_path, model, samples=8, batch_size=4)

    rows = csv_rows(trainer)
    assert column(rows, "train_loss") == [*(written(v) for v in model.losses), "100.0"]
    assert float(trainer.callback_metrics["train_loss"]) == 100.0
    assert float(trainer.logged_metrics["train_loss"]) == 100.0


def test_on_step_true_in_on_train_epoch_end_is_a_clear_error(tmp_path):
    class StepAtEpochEnd(Recorder):
        def on_train_epoch_end(self):
            self.log("bad", 1.0, on_step=True)

    with pytest.raises(MisconfigurationException, match=r"on_step=True.*on_train_epoch_end"):
        fit(tmp_path, StepAtEpochEnd())


def test_logging_in_predict_step_is_a_clear_error(tmp_path):
    class LogsInPredict(BoringModel):
        def predict_step(self, batch, batch_idx, dataloader_idx=0):
            self.log("nope", 1.0)
            return self(batch[0])

    trainer = quiet_trainer(tmp_path)
    with pytest.raises(MisconfigurationException, match="predict_step"):
        trainer.predict(LogsInPredict(), boring_loader(8))


def test_logging_a_non_scalar_tensor_is_a_value_error_naming_the_key(tmp_path):
    class LogsVector(BoringModel):
        def training_step(self, batch, batch_idx):
            x, y = batch
            self.log("per_sample", (self(x) - y).abs().squeeze(1))
            return F.mse_loss(self(x), y)

    with pytest.raises(ValueError, match="per_sample"):
        fit(tmp_path, LogsVector())


def test_logging_a_name_twice_in_one_hook_with_different_options_is_an_error(tmp_path):
    class Conflicting(BoringModel):
        def training_step(self, batch, batch_idx):
            x, y = batch
            loss = F.mse_loss(self(x), y)
            self.log("loss", loss, prog_bar=True)
            self.log("loss", loss, prog_bar=False)
            return loss

    with pytest.raises(MisconfigurationException, match=r"loss.*twice.*training_step"):
        fit(tmp_path, Conflicting())


def test_logging_a_name_twice_with_the_default_spelled_out_is_allowed(tmp_path):
    class Repeated(BoringModel):
        def training_step(self, batch, batch_idx):
            x, y = batch
            loss = F.mse_loss(self(x), y)
            self.log("loss", loss)
            self.log("loss", loss * 2, on_step=True, on_epoch=False)
            return loss

    trainer = fit(tmp_path, Repeated(), samples=4, batch_size=4)

    assert len(column(csv_rows(trainer), "loss")) == 1


def test_on_step_value_logged_in_validation_step_stays_out_of_callback_metrics(tmp_path):
    class StepInValidation(BoringModel):
        def validation_step(self, batch, batch_idx):
            x, y = batch
            self.log("val_step_only", F.mse_loss(self(x), y), on_step=True, on_epoch=False)

    trainer = quiet_trainer(tmp_path, enable_checkpointing=False, num_sanity_val_steps=0)
    trainer.validate(StepInValidation(), boring_loader(8), verbose=False)

    assert "val_step_only" not in trainer.callback_metrics


# ---------------------------------------------------------------------- validate() / test() results


class TwoKeys(BoringModel):
    """Logs `valid_b` before `valid_a` (and the same for test) to show the logging order."""

    def validation_step(self, batch, batch_idx, dataloader_idx=0):
        x, y = batch
        loss = F.mse_loss(self(x), y)
        self.log("valid_b", loss * 2)
        self.log("valid_a", loss)

    def test_step(self, batch, batch_idx, dataloader_idx=0):
        x, y = batch
        self.log("test_loss", F.mse_loss(self(x), y))


def test_validate_returns_one_dict_of_python_floats_in_logging_order(tmp_path):
    trainer = quiet_trainer(tmp_path, enable_checkpointing=False)
    results = trainer.validate(TwoKeys(), boring_loader(16), verbose=False)

    assert isinstance(results, list) and len(results) == 1
    assert list(results[0]) == ["valid_b", "valid_a"]
    assert all(type(v) is float for v in results[0].values())
    rows = csv_rows(trainer)
    assert [written(results[0]["valid_a"])] == column(rows, "valid_a")
    assert [written(results[0]["valid_b"])] == column(rows, "valid_b")


def test_test_returns_one_dict_per_dataloader_with_suffixed_keys(tmp_path):
    trainer = quiet_trainer(tmp_path, enable_checkpointing=False)
    results = trainer.test(TwoKeys(), [boring_loader(8), boring_loader(16)], verbose=False)

    assert [list(r) for r in results] == [
        ["test_loss/dataloader_idx_0"],
        ["test_loss/dataloader_idx_1"],
    ]
    rows = csv_rows(trainer)
    assert len(rows) == 1
    assert rows[0]["test_loss/dataloader_idx_1"] == written(
        results[1]["test_loss/dataloader_idx_1"]
    )


def test_several_val_dataloaders_suffix_keys_in_csv_and_callback_metrics(tmp_path):
    trainer = quiet_trainer(tmp_path, max_epochs=1, enable_checkpointing=False, log_every_n_steps=1)
    trainer.fit(TwoKeys(), boring_loader(8), [boring_loader(8), boring_loader(8, batch_size=4)])

    rows = csv_rows(trainer)
    assert list(rows[0]) == [
        "epoch",
        "step",
        "train_loss",
        "valid_a/dataloader_idx_0",
        "valid_a/dataloader_idx_1",
        "valid_b/dataloader_idx_0",
        "valid_b/dataloader_idx_1",
    ]
    validation = [row for row in rows if row["valid_a/dataloader_idx_0"]]
    assert len(validation) == 1 and validation[0]["valid_a/dataloader_idx_1"]
    assert "valid_a/dataloader_idx_1" in trainer.callback_metrics
    assert "valid_a" not in trainer.callback_metrics


def test_several_loaders_fork_a_name_ahead_of_the_loader_suffix(tmp_path):
    class Forked(BoringModel):
        def test_step(self, batch, batch_idx, dataloader_idx=0):
            self.log("loss", F.mse_loss(self(batch[0]), batch[1]), on_step=True)
            self.log(f"own_{dataloader_idx}", float(dataloader_idx), add_dataloader_idx=False)

    trainer = quiet_trainer(tmp_path, enable_checkpointing=False)
    loaders = {"small": boring_loader(8), "large": boring_loader(16)}
    results = trainer.test(Forked(), loaders, verbose=False)

    # a name kept without its loader's suffix is still that loader's alone
    assert [sorted(r) for r in results] == [
        ["loss_epoch/dataloader_idx_0", "own_0"],
        ["loss_epoch/dataloader_idx_1", "own_1"],
    ]
    assert "loss_step/dataloader_idx_1" in csv_rows(trainer)[0]


def test_one_name_from_two_loaders_without_their_suffix_is_an_error(tmp_path):
    class Merged(BoringModel):
        def test_step(self, batch, batch_idx, dataloader_idx=0):
            self.log("merged", 1.0, add_dataloader_idx=False)

    trainer = quiet_trainer(tmp_path, enable_checkpointing=False)
    with pytest.raises(MisconfigurationException, match=r"merged.*twice.*test_step"):
        trainer.test(Merged(), [boring_loader(8), boring_loader(8)], verbose=False)


def test_validate_returns_what_the_logger_receives_epoch_suffixed_and_logger_true_only(tmp_path):
    class ForkedAndHidden(BoringModel):
        def validation_step(self, batch, batch_idx):
            x, y = batch
            loss = F.mse_loss(self(x), y)
            self.log("forked", loss, on_step=True, on_epoch=True)
            self.log("hidden", loss, logger=False)
            self.log("shown", loss)

    trainer = quiet_trainer(tmp_path, enable_checkpointing=False)
    results = trainer.validate(ForkedAndHidden(), boring_loader(8), verbose=False)

    # Lightning returns the logger's epoch dict: `forked_epoch`, not `forked`; not `hidden`
    assert list(results[0]) == ["forked_epoch", "shown"]
    assert {"forked", "forked_epoch", "hidden", "shown"} <= set(trainer.callback_metrics)


# ---------------------------------------------------------------------- the rest of self.log's options


class StandInTrainer:
    """Just what `Module.log` uses of a trainer (`TrainerContract.results`), with a fake
    cross-process reduction that doubles each value and records its op."""

    def __init__(self) -> None:
        self.reduced: list[str] = []
        self.results = Results({}, {}, {}, self.reduce)

    def reduce(self, value: torch.Tensor, op: str) -> torch.Tensor:
        self.reduced.append(op)
        return value * 2


def test_rank_zero_only_values_are_not_reduced_across_processes():
    # Lightning's _Sync: rank_zero_only=True makes sync_dist a no-op (only rank 0 calls self.log,
    # so a collective would wait forever for the others)
    trainer = StandInTrainer()
    model = BoringModel()
    model.trainer = trainer
    trainer.results.hook = "training_step"
    trainer.results.start_batch((torch.ones(4, 1),))
    model.log("synced", torch.tensor(1.0), sync_dist=True, on_epoch=True)
    model.log("rank_zero", torch.tensor(1.0), sync_dist=True, on_epoch=True, rank_zero_only=True)
    trainer.results.epoch_values()
    assert trainer.reduced == ["mean", "sum", "sum"]  # the synced value's step, then its epoch
    metrics = trainer.results.callback_metrics
    assert float(metrics["rank_zero_step"]) == 1.0 and float(metrics["rank_zero_epoch"]) == 1.0
    assert float(metrics["synced_step"]) == 2.0


def test_a_sync_dist_group_is_refused_with_a_warning_once(tmp_path):
    class GroupLogger(BoringModel):
        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            loss = super().training_step(batch, batch_idx)
            self.log("grouped", loss, sync_dist=True, sync_dist_group="ranks 0 and 1")
            return loss

    with pytest.warns(UserWarning, match="sync_dist_group") as warned:
        fit(tmp_path, GroupLogger(), samples=16, batch_size=4)
    assert len([w for w in warned if "sync_dist_group" in str(w.message)]) == 1


def test_enable_graph_leaves_logged_values_detached_as_in_lightning(tmp_path):
    # Lightning 2.6.6, run side by side: with enable_graph=True it updates its aggregates under
    # no_grad, so callback_metrics hold no graph there either
    seen: list[bool] = []

    class GraphLogger(BoringModel):
        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            loss = super().training_step(batch, batch_idx)
            self.log("kept", loss, enable_graph=True, on_epoch=True, prog_bar=True)
            return loss

        def on_train_batch_end(self, *args: Any) -> None:
            seen.append(self.trainer.callback_metrics["kept"].requires_grad)

    fit(tmp_path, GraphLogger(), samples=8, batch_size=4)
    assert seen == [False, False]


class AliasedMetric(WithMetric):
    """The metric is reachable under two names; `metric_attribute` says which one to use."""

    def __init__(self, metric_attribute: str) -> None:
        super().__init__()
        self.by_stage = torch.nn.ModuleDict({"train_mae": self.mae})
        self.metric_attribute = metric_attribute

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        preds = self(x)
        self.mae(preds, y)
        self.log("mae", self.mae, on_epoch=True, metric_attribute=self.metric_attribute)
        return F.mse_loss(preds, y)


def test_metric_attribute_names_where_a_checkpoint_finds_the_logged_metric(tmp_path):
    path = tmp_path / "inside_the_epoch.ckpt"

    class SaveInsideTheEpoch(pl.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            trainer.save_checkpoint(path)

    model = AliasedMetric("by_stage.train_mae")
    fit(tmp_path, model, samples=8, batch_size=4, callbacks=[SaveInsideTheEpoch()])
    entries = torch.load(path, weights_only=True)["loops"]["results"]["entries"]
    assert [e["metric"] for e in entries if "metric" in e] == ["by_stage.train_mae"]


def test_a_metric_attribute_that_does_not_hold_the_logged_metric_is_refused(tmp_path):
    with pytest.raises(MisconfigurationException, match="metric_attribute='by_stage.other'"):
        fit(tmp_path, AliasedMetric("by_stage.other"), samples=8, batch_size=4)
