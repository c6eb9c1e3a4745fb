"""Tests of the Trainer's loop: hook order, counters, return values, limits and what it prints.

The hook-order lists are written out literally so that a change of order shows up as a diff.
Module hooks are recorded when they return and callback hooks when they are called, as in
Lightning's tests/tests_pytorch/models/test_hooks.py, so each list reads against Lightning's.
"""

from __future__ import annotations

import logging
from typing import Any

import pytest
import torch
from boring import BoringModel, boring_loader, quiet_trainer
from torch.nn import functional as F

import ltrain as pl
from ltrain.callbacks.base import Callback
from ltrain.errors import MisconfigurationException

# most fits here have no val loader on purpose; one test checks that warning itself
pytestmark = pytest.mark.filterwarnings("ignore:You defined a validation_step:UserWarning")

# ---------------------------------------------------------------------- hook recording

MODULE_HOOKS = (
    "configure_callbacks",
    "prepare_data",
    "setup",
    "configure_model",
    "configure_optimizers",
    "on_fit_start",
    "on_train_start",
    "on_train_epoch_start",
    "on_before_batch_transfer",
    "transfer_batch_to_device",
    "on_after_batch_transfer",
    "on_train_batch_start",
    "training_step",
    "on_before_zero_grad",
    "optimizer_zero_grad",
    "on_before_backward",
    "backward",
    "on_after_backward",
    "manual_backward",
    "on_before_optimizer_step",
    "configure_gradient_clipping",
    "optimizer_step",
    "lr_scheduler_step",
    "on_train_batch_end",
    "on_validation_model_zero_grad",
    "on_validation_start",
    "on_validation_epoch_start",
    "on_validation_batch_start",
    "validation_step",
    "on_validation_batch_end",
    "on_validation_epoch_end",
    "on_validation_end",
    "on_test_start",
    "on_test_epoch_start",
    "on_test_batch_start",
    "test_step",
    "on_test_batch_end",
    "on_test_epoch_end",
    "on_test_end",
    "on_predict_start",
    "on_predict_epoch_start",
    "on_predict_batch_start",
    "predict_step",
    "on_predict_batch_end",
    "on_predict_epoch_end",
    "on_predict_end",
    "on_train_epoch_end",
    "on_save_checkpoint",
    "on_load_checkpoint",
    "on_train_end",
    "on_fit_end",
    "teardown",
)

CALLBACK_HOOKS = (
    "setup",
    "on_fit_start",
    "on_sanity_check_start",
    "on_sanity_check_end",
    "on_train_start",
    "on_train_epoch_start",
    "on_train_batch_start",
    "on_before_zero_grad",
    "on_before_backward",
    "on_after_backward",
    "on_before_optimizer_step",
    "on_train_batch_end",
    "on_validation_start",
    "on_validation_epoch_start",
    "on_validation_batch_start",
    "on_validation_batch_end",
    "on_validation_epoch_end",
    "on_validation_end",
    "on_test_start",
    "on_test_epoch_start",
    "on_test_batch_start",
    "on_test_batch_end",
    "on_test_epoch_end",
    "on_test_end",
    "on_predict_start",
    "on_predict_epoch_start",
    "on_predict_batch_start",
    "on_predict_batch_end",
    "on_predict_epoch_end",
    "on_predict_end",
    "on_train_epoch_end",
    "on_save_checkpoint",
    "on_load_checkpoint",
    "on_train_end",
    "on_fit_end",
    "on_exception",
    "teardown",
)


class HookedModel(BoringModel):
    """BoringModel with a StepLR (as Lightning's) and its own loaders of 2 batches each."""

    def __init__(self, called: list[str]) -> None:
        super().__init__()
        self.called = called

    def configure_optimizers(self) -> Any:
        optimizer = torch.optim.SGD(self.parameters(), lr=0.1)
        return [optimizer], [torch.optim.lr_scheduler.StepLR(optimizer, step_size=1)]

    def predict_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        return self(batch[0])

    def train_dataloader(self) -> Any:
        return boring_loader(16, 8)

    def val_dataloader(self) -> Any:
        return boring_loader(16, 8)

    def test_dataloader(self) -> Any:
        return boring_loader(16, 8)

    def predict_dataloader(self) -> Any:
        return boring_loader(16, 8)


def _recorded_on_return(name: str, method: Any) -> Any:
    def hook(self: HookedModel, *args: Any, **kwargs: Any) -> Any:
        output = method(self, *args, **kwargs)
        self.called.append(name)
        return output

    return hook


for _name in MODULE_HOOKS:
    setattr(HookedModel, _name, _recorded_on_return(_name, getattr(HookedModel, _name)))


class HookedCallback(Callback):
    def __init__(self, called: list[str]) -> None:
        self.called = called


def _recorded_on_call(name: str) -> Any:
    def hook(self: HookedCallback, trainer: Any, pl_module: Any, *args: Any) -> None:
        self.called.append(f"Callback.{name}")

    return hook


for _name in CALLBACK_HOOKS:
    setattr(HookedCallback, _name, _recorded_on_call(_name))


def eval_epoch(kind: str, batches: int = 2) -> list[str]:
    return [
        f"Callback.on_{kind}_start",
        f"on_{kind}_start",
        f"Callback.on_{kind}_epoch_start",
        f"on_{kind}_epoch_start",
        *[
            name
            for _ in range(batches)
            for name in (
                "on_before_batch_transfer",
                "transfer_batch_to_device",
                "on_after_batch_transfer",
                f"Callback.on_{kind}_batch_start",
                f"on_{kind}_batch_start",
                f"{kind}_step",
                f"Callback.on_{kind}_batch_end",
                f"on_{kind}_batch_end",
            )
        ],
        f"Callback.on_{kind}_epoch_end",
        f"on_{kind}_epoch_end",
        f"Callback.on_{kind}_end",
        f"on_{kind}_end",
    ]


def automatic_batch(last: bool) -> list[str]:
    return [
        "on_before_batch_transfer",
        "transfer_batch_to_device",
        "on_after_batch_transfer",
        "Callback.on_train_batch_start",
        "on_train_batch_start",
        "training_step",
        "Callback.on_before_zero_grad",
        "on_before_zero_grad",
        "optimizer_zero_grad",
        "Callback.on_before_backward",
        "on_before_backward",
        "backward",
        "Callback.on_after_backward",
        "on_after_backward",
        "Callback.on_before_optimizer_step",
        "on_before_optimizer_step",
        "configure_gradient_clipping",
        "optimizer_step",  # recorded on return: it wraps everything from training_step on
        *(
            ["lr_scheduler_step"] if last else []
        ),  # an epoch-interval scheduler, after the last step
        "Callback.on_train_batch_end",
        "on_train_batch_end",
    ]


def manual_batch() -> list[str]:
    return [
        "on_before_batch_transfer",
        "transfer_batch_to_device",
        "on_after_batch_transfer",
        "Callback.on_train_batch_start",
        "on_train_batch_start",
        "Callback.on_before_backward",
        "on_before_backward",
        "backward",
        "Callback.on_after_backward",
        "on_after_backward",
        "manual_backward",
        "closure",
        "Callback.on_before_optimizer_step",
        "on_before_optimizer_step",
        "training_step",
        "Callback.on_train_batch_end",
        "on_train_batch_end",
    ]


def fit_hooks(train_batches: list[str]) -> list[str]:
    return [
        "configure_callbacks",
        "prepare_data",
        "Callback.setup",
        "setup",
        "configure_model",
        "configure_optimizers",
        "Callback.on_fit_start",
        "on_fit_start",
        "Callback.on_sanity_check_start",
        *eval_epoch("validation"),
        "Callback.on_sanity_check_end",
        "Callback.on_train_start",
        "on_train_start",
        "Callback.on_train_epoch_start",
        "on_train_epoch_start",
        *train_batches,
        "on_validation_model_zero_grad",
        *eval_epoch("validation"),
        "Callback.on_train_epoch_end",
        "on_train_epoch_end",
        # ModelCheckpoint saves here, after the module's on_train_epoch_end
        "Callback.on_save_checkpoint",
        "on_save_checkpoint",
        "Callback.on_train_end",
        "on_train_end",
        "Callback.on_fit_end",
        "on_fit_end",
        "Callback.teardown",
        "teardown",
    ]


def hooked_trainer(tmp_path: Any, called: list[str]) -> pl.Trainer:
    return quiet_trainer(
        tmp_path,
        max_epochs=1,
        limit_train_batches=2,
        limit_val_batches=2,
        callbacks=[HookedCallback(called)],
    )


def test_fit_calls_hooks_in_lightnings_order_under_automatic_optimization(tmp_path):
    called: list[str] = []
    trainer = hooked_trainer(tmp_path, called)
    trainer.fit(HookedModel(called))
    expected = fit_hooks([*automatic_batch(last=False), *automatic_batch(last=True)])
    assert called == expected


def test_fit_calls_hooks_in_lightnings_order_under_manual_optimization(tmp_path):
    called: list[str] = []

    class ManualHookedModel(HookedModel):
        def __init__(self, called: list[str]) -> None:
            super().__init__(called)
            self.automatic_optimization = False

        def configure_optimizers(self) -> Any:
            return torch.optim.SGD(self.parameters(), lr=0.1)

        def training_step(self, batch: Any, batch_idx: int) -> Any:
            optimizer = self.optimizers()
            loss = F.mse_loss(self(batch[0]), batch[1])
            optimizer.zero_grad()
            self.manual_backward(loss)
            optimizer.step(lambda: self.called.append("closure"))
            return {"loss": loss}

    # record the overridden methods like the others
    for name in ("configure_optimizers", "training_step"):
        setattr(ManualHookedModel, name, _recorded_on_return(name, vars(ManualHookedModel)[name]))
    trainer = hooked_trainer(tmp_path, called)
    trainer.fit(ManualHookedModel(called))
    assert called == fit_hooks([*manual_batch(), *manual_batch()])
    assert trainer.global_step == 2


@pytest.mark.parametrize("verb, kind", [("validate", "validation"), ("test", "test")])
def test_evaluation_calls_hooks_in_lightnings_order(tmp_path, verb, kind):
    called: list[str] = []
    trainer = hooked_trainer(tmp_path, called)
    getattr(trainer, verb)(HookedModel(called), verbose=False)
    assert called == [
        "configure_callbacks",
        "prepare_data",
        "Callback.setup",
        "setup",
        "configure_model",
        *eval_epoch(kind),
        "Callback.teardown",
        "teardown",
    ]


def test_predict_calls_hooks_in_lightnings_order(tmp_path):
    called: list[str] = []
    trainer = hooked_trainer(tmp_path, called)
    trainer.predict(HookedModel(called))
    batch = [
        "on_before_batch_transfer",
        "transfer_batch_to_device",
        "on_after_batch_transfer",
        "Callback.on_predict_batch_start",
        "on_predict_batch_start",
        "predict_step",
        "Callback.on_predict_batch_end",
        "on_predict_batch_end",
    ]
    assert called == [
        "configure_callbacks",
        "prepare_data",
        "Callback.setup",
        "setup",
        "configure_model",
        "Callback.on_predict_start",
        "on_predict_start",
        "Callback.on_predict_epoch_start",
        "on_predict_epoch_start",
        *batch,
        *batch,
        "Callback.on_predict_epoch_end",
        "on_predict_epoch_end",
        "Callback.on_predict_end",
        "on_predict_end",
        "Callback.teardown",
        "teardown",
    ]


def test_a_failing_step_reaches_on_exception_then_teardown(tmp_path):
    called: list[str] = []

    class Failing(HookedModel):
        def training_step(self, batch: Any, batch_idx: int) -> Any:
            raise RuntimeError("boom")

    trainer = quiet_trainer(
        tmp_path,
        max_epochs=1,
        num_sanity_val_steps=0,
        callbacks=[HookedCallback(called)],
    )
    with pytest.raises(RuntimeError, match="boom"):
        trainer.fit(Failing(called))
    assert called[-4:] == [
        "on_train_batch_start",
        "Callback.on_exception",
        "Callback.teardown",
        "teardown",
    ]


# ---------------------------------------------------------------------- configure_optimizers


class OptimizerModel(BoringModel):
    def __init__(self, returns: Any) -> None:
        super().__init__()
        self.returns = returns

    def configure_optimizers(self) -> Any:
        return self.returns(self)


def sgd(module: torch.nn.Module, lr: float = 1.0) -> torch.optim.SGD:
    return torch.optim.SGD(module.parameters(), lr=lr)


def lr_of(trainer: pl.Trainer) -> float:
    return trainer.optimizers[0].param_groups[0]["lr"]


def step_lr(optimizer: torch.optim.Optimizer) -> torch.optim.lr_scheduler.StepLR:
    return torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)


def fit_briefly(
    tmp_path: Any, model: pl.LightningModule, epochs: int = 2, **kwargs: Any
) -> pl.Trainer:
    trainer = quiet_trainer(
        tmp_path, max_epochs=epochs, logger=False, enable_checkpointing=False, **kwargs
    )
    trainer.fit(model, boring_loader(32, 8), boring_loader(16, 8))
    return trainer


def test_a_single_optimizer_is_stepped_without_scheduler(tmp_path):
    trainer = fit_briefly(tmp_path, OptimizerModel(sgd))
    assert len(trainer.optimizers) == 1 and trainer.lr_scheduler_configs == []
    assert trainer.global_step == 8
    assert lr_of(trainer) == 1.0


def test_optimizers_and_schedulers_as_two_lists_step_the_scheduler_each_epoch(tmp_path):
    def returns(module: Any) -> Any:
        optimizer = sgd(module)
        return [optimizer], [step_lr(optimizer)]

    trainer = fit_briefly(tmp_path, OptimizerModel(returns), epochs=3)
    assert lr_of(trainer) == pytest.approx(0.125)


def test_dict_with_a_scheduler_object_steps_it_each_epoch(tmp_path):
    def returns(module: Any) -> Any:
        optimizer = sgd(module)
        return {"optimizer": optimizer, "lr_scheduler": step_lr(optimizer)}

    trainer = fit_briefly(tmp_path, OptimizerModel(returns), epochs=2)
    assert lr_of(trainer) == pytest.approx(0.25)


def step_every_2(module: Any) -> Any:
    optimizer = sgd(module)
    scheduler = {"scheduler": step_lr(optimizer), "interval": "step", "frequency": 2}
    return {"optimizer": optimizer, "lr_scheduler": scheduler}


def test_step_interval_scheduler_with_frequency_steps_every_n_batches(tmp_path):
    trainer = quiet_trainer(tmp_path, max_steps=6, logger=False, enable_checkpointing=False)
    trainer.fit(OptimizerModel(step_every_2), boring_loader(32, 8))  # 4 batches per epoch
    assert trainer.global_step == 6
    assert lr_of(trainer) == pytest.approx(0.5**3)  # after batches 2, 4 and 2 of the next epoch
    assert trainer.lr_scheduler_configs[0].interval == "step"


def test_step_interval_frequency_counts_batches_within_each_epoch(tmp_path):
    trainer = quiet_trainer(tmp_path, max_epochs=2, logger=False, enable_checkpointing=False)
    trainer.fit(OptimizerModel(step_every_2), boring_loader(24, 8))  # 3 batches per epoch
    # Lightning's rule: (batch_idx + 1) % frequency, so batch 2 of each epoch, not steps 2, 4, 6
    assert lr_of(trainer) == pytest.approx(0.5**2)


def test_reduce_lr_on_plateau_steps_on_the_monitored_value(tmp_path):
    seen: list[float] = []

    class Plateau(BoringModel):
        def validation_step(self, batch: Any, batch_idx: int) -> None:
            self.log("valid_loss", torch.tensor(1.0))  # never improves

        def configure_optimizers(self) -> Any:
            optimizer = sgd(self, lr=0.01)
            plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, patience=0, factor=0.1)
            return {
                "optimizer": optimizer,
                "lr_scheduler": {"scheduler": plateau, "monitor": "valid_loss"},
            }

        def lr_scheduler_step(self, scheduler: Any, metric: Any) -> None:
            seen.append(float(metric))
            super().lr_scheduler_step(scheduler, metric)

    trainer = fit_briefly(tmp_path, Plateau(), epochs=3)
    assert seen == [1.0, 1.0, 1.0]
    # epoch 0 sets the best, epochs 1 and 2 each reduce
    assert lr_of(trainer) == pytest.approx(0.01 * 0.1**2)


def test_reduce_lr_on_plateau_without_monitor_is_refused(tmp_path):
    def returns(module: Any) -> Any:
        optimizer = sgd(module)
        plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer)
        return {"optimizer": optimizer, "lr_scheduler": plateau}

    with pytest.raises(MisconfigurationException, match="ReduceLROnPlateau.*monitor"):
        fit_briefly(tmp_path, OptimizerModel(returns))


def test_reduce_lr_on_plateau_monitoring_an_unlogged_metric_names_the_logged_ones(tmp_path):
    def returns(module: Any) -> Any:
        optimizer = sgd(module)
        plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer)
        return {"optimizer": optimizer, "lr_scheduler": plateau, "monitor": "nope"}

    with pytest.raises(MisconfigurationException, match="'nope'.*train_loss.*valid_loss"):
        fit_briefly(tmp_path, OptimizerModel(returns))


def test_two_optimizers_under_automatic_optimization_are_refused(tmp_path):
    model = OptimizerModel(lambda m: [sgd(m), sgd(m)])
    with pytest.raises(MisconfigurationException, match="automatic_optimization = False"):
        fit_briefly(tmp_path, model)


def test_a_list_of_optimizers_works_under_manual_optimization(tmp_path):
    class TwoManual(BoringModel):
        def __init__(self) -> None:
            super().__init__()
            self.automatic_optimization = False

        def training_step(self, batch: Any, batch_idx: int) -> None:
            for optimizer in self.optimizers():
                optimizer.zero_grad()
                self.manual_backward(F.mse_loss(self(batch[0]), batch[1]))
                optimizer.step()

        def configure_optimizers(self) -> Any:
            return [sgd(self, 0.1), sgd(self, 0.01)]

    trainer = fit_briefly(tmp_path, TwoManual(), epochs=1)
    assert len(trainer.optimizers) == 2
    assert trainer.global_step == 8  # 4 batches, 2 optimizer steps each


def test_configure_optimizers_returning_something_else_is_refused(tmp_path):
    with pytest.raises(MisconfigurationException, match="configure_optimizers"):
        fit_briefly(tmp_path, OptimizerModel(lambda m: "adam"))


# ---------------------------------------------------------------------- counters and return values


def test_two_epochs_of_47_batches_end_at_epoch_2_step_94(tmp_path):
    trainer = quiet_trainer(tmp_path, max_epochs=2, logger=False, enable_checkpointing=False)
    trainer.fit(BoringModel(), boring_loader(47, 1))
    assert trainer.current_epoch == 2
    assert trainer.global_step == 94


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
    with pytest.raises(MisconfigurationException, match=r"BoringModel.test_step\(\)"):
        trainer.test(BoringModel(), [boring_loader(16, 8), boring_loader(8, 8)])


def test_validate_value_is_the_batch_size_weighted_mean(tmp_path):
    x, y = boring_loader(12, 8).tensors
    model = BoringModel()
    with torch.no_grad():
        expected = F.mse_loss(model(x), y).item()
    trainer = quiet_trainer(tmp_path, logger=False)
    [metrics] = trainer.validate(model, boring_loader(12, 8), verbose=False)
    assert metrics["valid_loss"] == pytest.approx(expected, rel=1e-6)


class CountingModel(BoringModel):
    def __init__(self) -> None:
        super().__init__()
        self.train_batches: list[int] = []
        self.val_batches: list[int] = []
        self.test_batches: list[int] = []

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        self.train_batches.append(batch_idx)
        return super().training_step(batch, batch_idx)

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        if not self.trainer.sanity_checking:
            self.val_batches.append(batch_idx)
        super().validation_step(batch, batch_idx)

    def test_step(self, batch: Any, batch_idx: int) -> None:
        self.test_batches.append(batch_idx)
        super().test_step(batch, batch_idx)


@pytest.mark.parametrize("limit, expected", [(3, 3), (0.5, 5)])
def test_limit_batches_take_an_int_count_or_a_fraction(tmp_path, limit, expected):
    model = CountingModel()
    trainer = quiet_trainer(
        tmp_path,
        max_epochs=1,
        logger=False,
        enable_checkpointing=False,
        limit_train_batches=limit,
        limit_val_batches=limit,
        limit_test_batches=limit,
    )
    trainer.fit(model, boring_loader(80, 8), boring_loader(80, 8))
    trainer.test(model, boring_loader(80, 8), verbose=False)
    assert model.train_batches == model.val_batches == model.test_batches == list(range(expected))
    assert trainer.global_step == expected


def test_limit_val_batches_zero_skips_validation(tmp_path):
    model = CountingModel()
    trainer = quiet_trainer(tmp_path, max_epochs=1, logger=False, limit_val_batches=0)
    trainer.fit(model, boring_loader(16, 8), boring_loader(16, 8))
    assert model.val_batches == []


def test_fast_dev_run_runs_one_batch_and_writes_no_files(tmp_path, capsys):
    model = CountingModel()
    trainer = quiet_trainer(tmp_path, fast_dev_run=True, max_epochs=5)
    trainer.fit(model, boring_loader(80, 8), boring_loader(80, 8))
    assert model.train_batches == [0] and model.val_batches == [0]
    assert trainer.global_step == 1 and trainer.current_epoch == 1
    assert trainer.loggers == []
    assert list(tmp_path.iterdir()) == []
    assert "Running in `fast_dev_run` mode" in capsys.readouterr().out


def test_fast_dev_run_with_every_n_train_steps_checkpointing_still_saves_nothing(tmp_path):
    checkpoint = pl.callbacks.ModelCheckpoint(dirpath=tmp_path / "ckpts", every_n_train_steps=1)
    trainer = quiet_trainer(tmp_path, fast_dev_run=2, callbacks=[checkpoint])
    trainer.fit(BoringModel(), boring_loader(80, 8))
    assert not (tmp_path / "ckpts").exists()


def test_overfit_batches_trains_and_validates_on_the_same_first_batches(tmp_path):
    seen: list[torch.Tensor] = []

    class Recorder(CountingModel):
        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            seen.append(batch[0].clone())
            return super().training_step(batch, batch_idx)

    model = Recorder()
    trainer = quiet_trainer(tmp_path, max_epochs=2, logger=False, overfit_batches=2)
    trainer.fit(model, boring_loader(80, 8, shuffle=True), boring_loader(80, 8))
    assert model.train_batches == [0, 1, 0, 1]
    assert model.val_batches == [0, 1, 0, 1]
    assert torch.equal(seen[0], seen[2]) and torch.equal(seen[1], seen[3])
    assert trainer.global_step == 4


def test_max_steps_stops_mid_epoch_and_says_so(tmp_path, capsys):
    model = CountingModel()
    trainer = quiet_trainer(tmp_path, max_steps=5, logger=False, enable_checkpointing=False)
    trainer.fit(model, boring_loader(32, 8))
    assert trainer.global_step == 5
    # one epoch of 4 batches, then 1 batch of the next: that cut epoch still ends (and counts)
    assert trainer.current_epoch == 2
    assert model.train_batches == [0, 1, 2, 3, 0]
    assert "`Trainer.fit` stopped: `max_steps=5` reached." in capsys.readouterr().out


def test_max_epochs_ends_fit_and_says_so(tmp_path, capsys):
    trainer = quiet_trainer(tmp_path, max_epochs=2, logger=False, enable_checkpointing=False)
    trainer.fit(BoringModel(), boring_loader(16, 8))
    assert trainer.current_epoch == 2
    assert "`Trainer.fit` stopped: `max_epochs=2` reached." in capsys.readouterr().out


def test_max_epochs_defaults_to_1000(tmp_path):
    assert quiet_trainer(tmp_path).max_epochs == 1000
    assert quiet_trainer(tmp_path, max_steps=10).max_epochs == -1


class StopRequester(Callback):
    """Asks to stop after every training epoch, as an early-stopping callback would."""

    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        trainer.should_stop = True


def test_should_stop_ends_fit_after_the_epoch(tmp_path):
    trainer = quiet_trainer(tmp_path, max_epochs=10, logger=False, callbacks=[StopRequester()])
    trainer.fit(BoringModel(), boring_loader(16, 8))
    assert trainer.current_epoch == 1


def test_min_epochs_overrides_a_stop_request_and_says_so_once(tmp_path, capsys):
    epochs_seen: list[tuple[int, bool]] = []

    class Watcher(CountingModel):
        def on_train_epoch_start(self) -> None:
            epochs_seen.append((self.current_epoch, self.trainer.should_stop))

    trainer = quiet_trainer(
        tmp_path, max_epochs=10, min_epochs=3, logger=False, callbacks=[StopRequester()]
    )
    trainer.fit(Watcher(), boring_loader(16, 8))
    assert trainer.current_epoch == 3
    # as in Lightning, the request stands while training continues up to min_epochs
    assert epochs_seen == [(0, False), (1, True), (2, True)]
    out = capsys.readouterr().out
    message = (
        "Trainer was signaled to stop but the required `min_epochs=3` or `min_steps=None` has "
        "not been met. Training will continue..."
    )
    assert out.count(message) == 1


def test_min_steps_overrides_a_stop_request(tmp_path):
    trainer = quiet_trainer(
        tmp_path, max_epochs=10, min_steps=5, logger=False, callbacks=[StopRequester()]
    )
    trainer.fit(BoringModel(), boring_loader(16, 8))  # 2 batches per epoch
    assert trainer.global_step == 5  # stops mid-epoch as soon as min_steps is met


def hand_trained(loader: Any, lr: float, accumulate: int = 1, clip: float | None = None) -> Any:
    """The plain PyTorch loop Lightning's automatic optimization stands for."""
    model = BoringModel(lr=lr)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    batches = list(loader)
    for i, (x, y) in enumerate(batches):
        loss = F.mse_loss(model(x), y) / accumulate
        loss.backward()
        if (i + 1) % accumulate == 0 or i + 1 == len(batches):
            if clip is not None:
                torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
            optimizer.step()
            optimizer.zero_grad()
    return model


def test_accumulate_grad_batches_steps_on_the_mean_gradient_of_each_window(tmp_path):
    torch.manual_seed(0)
    model = BoringModel(lr=0.05)
    torch.manual_seed(0)
    expected = hand_trained(boring_loader(48, 8), lr=0.05, accumulate=2)
    trainer = quiet_trainer(
        tmp_path, max_epochs=1, logger=False, enable_checkpointing=False, accumulate_grad_batches=2
    )
    trainer.fit(model, boring_loader(48, 8))
    assert trainer.global_step == 3  # 6 batches, a step every 2
    torch.testing.assert_close(model.layer.weight, expected.layer.weight)
    torch.testing.assert_close(model.layer.bias, expected.layer.bias)


def test_accumulate_grad_batches_steps_on_an_epochs_incomplete_last_window(tmp_path):
    trainer = quiet_trainer(
        tmp_path, max_epochs=2, logger=False, enable_checkpointing=False, accumulate_grad_batches=2
    )
    trainer.fit(BoringModel(), boring_loader(40, 8))  # 5 batches: steps after 2, 4 and 5
    assert trainer.global_step == 6


def test_gradient_clip_val_clips_the_norm_before_the_step(tmp_path):
    norms_before: list[float] = []
    norms_after: list[float] = []

    class Watched(BoringModel):
        def on_before_optimizer_step(self, optimizer: Any) -> None:
            norms_before.append(grad_norm(self))

        def optimizer_step(self, *args: Any, **kwargs: Any) -> None:
            super().optimizer_step(*args, **kwargs)
            norms_after.append(grad_norm(self))  # SGD leaves the (clipped) gradients in place

    torch.manual_seed(0)
    model = Watched(lr=0.01)
    torch.manual_seed(0)
    expected = hand_trained(boring_loader(32, 8), lr=0.01, clip=0.5)
    trainer = quiet_trainer(
        tmp_path, max_epochs=1, logger=False, enable_checkpointing=False, gradient_clip_val=0.5
    )
    trainer.fit(model, boring_loader(32, 8))
    assert all(norm > 0.5 for norm in norms_before), "the test needs gradients worth clipping"
    assert all(norm <= 0.5 + 1e-5 for norm in norms_after)
    torch.testing.assert_close(model.layer.weight, expected.layer.weight)


def grad_norm(module: torch.nn.Module) -> float:
    return torch.linalg.vector_norm(
        torch.stack([p.grad.norm() for p in module.parameters()])
    ).item()


def test_gradient_clip_algorithm_value_clamps_each_gradient(tmp_path):
    largest: list[float] = []

    class Watched(BoringModel):
        def optimizer_step(self, *args: Any, **kwargs: Any) -> None:
            super().optimizer_step(*args, **kwargs)
            largest.append(max(p.grad.abs().max().item() for p in self.parameters()))

    trainer = quiet_trainer(
        tmp_path,
        max_epochs=1,
        logger=False,
        gradient_clip_val=0.01,
        gradient_clip_algorithm="value",
    )
    trainer.fit(Watched(), boring_loader(16, 8))
    assert largest and all(value <= 0.01 + 1e-7 for value in largest)


# ------------------------------------------------------------------ what training_step may return


def test_training_step_dict_without_loss_is_refused(tmp_path):
    class NoLoss(BoringModel):
        def training_step(self, batch: Any, batch_idx: int) -> Any:
            return {"value": super().training_step(batch, batch_idx)}

    with pytest.raises(MisconfigurationException, match="'loss'"):
        fit_briefly(tmp_path, NoLoss())


def test_training_step_dict_with_loss_trains_and_reaches_on_train_batch_end(tmp_path):
    outputs: list[Any] = []

    class WithExtras(BoringModel):
        def training_step(self, batch: Any, batch_idx: int) -> Any:
            return {"loss": super().training_step(batch, batch_idx), "extra": 7}

        def on_train_batch_end(self, outputs_: Any, batch: Any, batch_idx: int) -> None:
            outputs.append(outputs_)

    trainer = fit_briefly(tmp_path, WithExtras(), epochs=1)
    assert trainer.global_step == 4
    assert outputs[0]["extra"] == 7 and not outputs[0]["loss"].requires_grad


def test_training_step_returning_none_skips_the_step(tmp_path):
    class Skipper(BoringModel):
        def training_step(self, batch: Any, batch_idx: int) -> None:
            super().training_step(batch, batch_idx)
            return None

    model = Skipper()
    before = [p.detach().clone() for p in model.parameters()]
    fit_briefly(tmp_path, model, epochs=1)
    for old, new in zip(before, model.parameters(), strict=True):
        assert torch.equal(old, new)


def test_on_train_batch_start_returning_minus_one_ends_the_epoch(tmp_path):
    class Cutter(CountingModel):
        def on_train_batch_start(self, batch: Any, batch_idx: int) -> Any:
            return -1 if batch_idx == 2 else None

    model = Cutter()
    trainer = fit_briefly(tmp_path, model, epochs=2)
    assert model.train_batches == [0, 1, 0, 1]
    assert trainer.current_epoch == 2 and trainer.global_step == 4


# ---------------------------------------------------------------------- console


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


def test_validation_step_without_val_loader_warns_and_skips_validation(tmp_path):
    model = CountingModel()
    trainer = quiet_trainer(tmp_path, max_epochs=1, logger=False)
    with pytest.warns(
        UserWarning,
        match="You defined a validation_step but have no val_dataloader. Skipping val loop.",
    ):
        trainer.fit(model, boring_loader(16, 8))
    assert model.val_batches == []


def test_console_lines_go_through_the_ltrain_logger(tmp_path, capsys):
    logging.getLogger("ltrain").setLevel(logging.WARNING)
    try:
        quiet_trainer(tmp_path, logger=False)
    finally:
        logging.getLogger("ltrain").setLevel(logging.INFO)
    assert "GPU available" not in capsys.readouterr().out


# ------------------------------------------------------------------ one process, several trainers


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


# ---------------------------------------------------------------------- data sources


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


def test_a_modules_own_dataloader_methods_feed_every_stage(tmp_path):
    called: list[str] = []
    model = HookedModel(called)
    trainer = quiet_trainer(tmp_path, max_epochs=1, logger=False)
    trainer.fit(model)
    assert trainer.global_step == 2
    assert "valid_loss" in trainer.callback_metrics
    assert list(trainer.test(model, verbose=False)[0]) == ["test_loss"]
    assert len(trainer.predict(model)) == 2


def test_fit_without_any_training_data_says_where_it_can_come_from(tmp_path):
    trainer = quiet_trainer(tmp_path, logger=False)
    with pytest.raises(MisconfigurationException, match="train_dataloader"):
        trainer.fit(BoringModel())


# ---------------------------------------------------------------------- when validation runs


class ValidationCounter(BoringModel):
    def __init__(self) -> None:
        super().__init__()
        self.validated_at: list[int] = []  # global_step at each validation run during fit
        self.sanity_batches = 0

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        if self.trainer.sanity_checking:
            self.sanity_batches += 1
        super().validation_step(batch, batch_idx)

    def on_validation_end(self) -> None:
        if not self.trainer.sanity_checking:
            self.validated_at.append(self.global_step)


def test_val_check_interval_half_validates_twice_per_epoch(tmp_path):
    model = ValidationCounter()
    trainer = quiet_trainer(tmp_path, max_epochs=2, logger=False, val_check_interval=0.5)
    trainer.fit(model, boring_loader(47, 1), boring_loader(8, 8))
    assert model.validated_at == [23, 46, 70, 93]


def test_val_check_interval_int_counts_batches(tmp_path):
    model = ValidationCounter()
    trainer = quiet_trainer(tmp_path, max_epochs=1, logger=False, val_check_interval=3)
    trainer.fit(model, boring_loader(80, 8), boring_loader(8, 8))
    assert model.validated_at == [3, 6, 9]


def test_check_val_every_n_epoch_skips_epochs(tmp_path):
    model = ValidationCounter()
    trainer = quiet_trainer(tmp_path, max_epochs=4, logger=False, check_val_every_n_epoch=2)
    trainer.fit(model, boring_loader(16, 8), boring_loader(8, 8))
    assert model.validated_at == [4, 8]


@pytest.mark.parametrize("steps, expected", [(None, 2), (0, 0), (1, 1), (-1, 3)])
def test_sanity_check_runs_num_sanity_val_steps_batches(tmp_path, steps, expected):
    model = ValidationCounter()
    trainer = quiet_trainer(tmp_path, max_epochs=1, logger=False, num_sanity_val_steps=steps)
    trainer.fit(model, boring_loader(8, 8), boring_loader(24, 8))
    assert model.sanity_batches == expected


def test_sanity_check_values_do_not_reach_callback_metrics(tmp_path):
    seen: list[dict[str, Any]] = []

    class Watcher(BoringModel):
        def on_train_start(self) -> None:
            seen.append(dict(self.trainer.callback_metrics))

    trainer = quiet_trainer(tmp_path, max_epochs=1, logger=False)
    trainer.fit(Watcher(), boring_loader(8, 8), boring_loader(8, 8))
    assert seen == [{}]


# ---------------------------------------------------------------------- resuming


def test_resume_from_an_epoch_end_checkpoint_matches_an_uninterrupted_run(tmp_path):
    torch.manual_seed(0)
    straight = BoringModel(lr=0.05)
    torch.manual_seed(0)
    interrupted = BoringModel(lr=0.05)
    quiet_trainer(tmp_path / "a", max_epochs=3, logger=False).fit(straight, boring_loader(24, 8))

    first = quiet_trainer(tmp_path / "b", max_epochs=2, logger=False)
    first.fit(interrupted, boring_loader(24, 8))
    path = first.checkpoint_callback.best_model_path
    resumed = BoringModel(lr=0.05)
    second = quiet_trainer(tmp_path / "c", max_epochs=3, logger=False)
    second.fit(resumed, boring_loader(24, 8), ckpt_path=path)
    assert second.global_step == 9 and second.current_epoch == 3
    torch.testing.assert_close(resumed.state_dict(), straight.state_dict(), rtol=0, atol=0)
    ckpts = sorted(p.name for p in (tmp_path / "c" / "checkpoints").iterdir())
    assert ckpts == ["epoch=2-step=9.ckpt"]


def test_resuming_from_a_weights_only_checkpoint_is_refused(tmp_path):
    checkpoint = pl.callbacks.ModelCheckpoint(dirpath=tmp_path / "w", save_weights_only=True)
    first = quiet_trainer(tmp_path, max_epochs=1, logger=False, callbacks=[checkpoint])
    first.fit(BoringModel(), boring_loader(16, 8))
    second = quiet_trainer(tmp_path, max_epochs=2, logger=False)
    with pytest.raises(MisconfigurationException, match="weights-only"):
        second.fit(BoringModel(), boring_loader(16, 8), ckpt_path=checkpoint.best_model_path)


def test_resume_from_a_mid_epoch_checkpoint_trains_the_rest_of_that_epoch(tmp_path):
    torch.manual_seed(0)
    straight = BoringModel(lr=0.05)
    torch.manual_seed(0)
    interrupted = BoringModel(lr=0.05)
    quiet_trainer(tmp_path / "a", max_epochs=2, logger=False).fit(
        straight, boring_loader(32, 8, shuffle=True)
    )

    checkpoint = pl.callbacks.ModelCheckpoint(dirpath=tmp_path / "b", every_n_train_steps=3)
    first = quiet_trainer(tmp_path, max_steps=3, logger=False, callbacks=[checkpoint])
    first.fit(interrupted, boring_loader(32, 8, shuffle=True))  # stops after batch 2 of 4
    assert checkpoint.best_model_path.endswith("epoch=0-step=3.ckpt")

    seen: list[tuple[int, int]] = []

    class Watched(BoringModel):
        def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
            seen.append((self.current_epoch, batch_idx))

    resumed = Watched(lr=0.05)
    second = quiet_trainer(tmp_path / "c", max_epochs=2, logger=False)
    second.fit(resumed, boring_loader(32, 8, shuffle=True), ckpt_path=checkpoint.best_model_path)
    assert seen == [(0, 3), (1, 0), (1, 1), (1, 2), (1, 3)]
    assert second.global_step == 8 and second.current_epoch == 2
    torch.testing.assert_close(resumed.state_dict(), straight.state_dict(), rtol=0, atol=0)


def test_a_checkpoint_saved_after_fit_resumes_where_fit_ended(tmp_path):
    first = quiet_trainer(tmp_path, max_epochs=2, logger=False)
    first.fit(BoringModel(), boring_loader(16, 8))
    first.save_checkpoint(tmp_path / "end.ckpt")
    assert torch.load(tmp_path / "end.ckpt", weights_only=True)["epoch"] == 2
    second = quiet_trainer(tmp_path, max_epochs=3, logger=False)
    second.fit(BoringModel(), boring_loader(16, 8), ckpt_path=tmp_path / "end.ckpt")
    assert second.current_epoch == 3 and second.global_step == 6
