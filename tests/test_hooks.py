"""Tests of the hook dispatcher: the order of the module's and the callbacks' hooks in every stage.

The hook-order lists are written out literally so that a change of order shows up as a diff.
Module hooks are recorded when they return and callback hooks when they are called, as in
Lightning's tests/tests_pytorch/models/test_hooks.py, so each list reads against Lightning's.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from boring import BoringModel, boring_loader, quiet_trainer
from torch.nn import functional as F

import ltrain as pl
from ltrain.callbacks.base import Callback

# most fits here have no val loader on purpose; one test checks that warning itself
pytestmark = pytest.mark.filterwarnings("ignore:You defined a validation_step:UserWarning")


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


def test_a_failing_step_reaches_on_exception_and_no_teardown(tmp_path):
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
    # as in Lightning: the callbacks hear of it; no teardown hook runs after a failed run
    assert called[-2:] == ["on_train_batch_start", "Callback.on_exception"]


def test_a_modules_own_dataloader_methods_feed_every_stage(tmp_path):
    called: list[str] = []
    model = HookedModel(called)
    trainer = quiet_trainer(tmp_path, max_epochs=1, logger=False)
    trainer.fit(model)
    assert trainer.global_step == 2
    assert "valid_loss" in trainer.callback_metrics
    assert list(trainer.test(model, verbose=False)[0]) == ["test_loss"]
    assert len(trainer.predict(model)) == 2


class TrainOnly(pl.LightningModule):
    """A module with a training step and nothing else of its own."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(4, 1)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        return F.mse_loss(self.layer(x), y)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_a_step_or_hook_set_on_the_instance_counts_as_overridden(tmp_path):
    # Lightning's is_overridden compares the instance's attribute with the base class's, so an
    # attribute set on the instance counts, for steps and batch hooks as for callback hooks
    called: list[str] = []
    model = TrainOnly()
    model.validation_step = lambda batch, batch_idx: called.append(f"validation_step {batch_idx}")

    def after_transfer(batch: Any, dataloader_idx: int) -> Any:
        called.append("on_after_batch_transfer")
        return batch

    model.on_after_batch_transfer = after_transfer
    trainer = quiet_trainer(tmp_path, max_epochs=1, logger=False, num_sanity_val_steps=0)
    trainer.fit(model, boring_loader(8, 8), boring_loader(16, 8))
    assert called == [
        "on_after_batch_transfer",
        "on_after_batch_transfer",
        "validation_step 0",
        "on_after_batch_transfer",
        "validation_step 1",
    ]
    called.clear()
    trainer.validate(model, boring_loader(8, 8), verbose=False)
    assert called == ["on_after_batch_transfer", "validation_step 0"]


def test_steps_get_batch_idx_by_lightnings_signature_rule(tmp_path):
    # batch_idx is passed when the step names it, takes *args, or takes two arguments whatever
    # their names; `step(self, batch)` gets the batch alone
    seen: list[tuple[str, tuple]] = []

    class Steps(BoringModel):
        def training_step(self, batch):
            seen.append(("training", ()))
            return super().training_step(batch, 0)

        def validation_step(self, batch, index):
            seen.append(("validation", (index,)))

        def test_step(self, batch, *rest):
            seen.append(("test", rest))

        def predict_step(self, batch):
            seen.append(("predict", ()))
            return self(batch[0])

    model = Steps()
    trainer = quiet_trainer(tmp_path, max_epochs=1, logger=False, num_sanity_val_steps=0)
    trainer.fit(model, boring_loader(8, 8), boring_loader(16, 8))
    trainer.test(model, boring_loader(8, 8), verbose=False)
    trainer.predict(model, boring_loader(8, 8))
    assert seen == [
        ("training", ()),
        ("validation", (0,)),
        ("validation", (1,)),
        ("test", (0,)),
        ("predict", ()),
    ]
