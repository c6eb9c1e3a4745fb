"""Tests of what a `LightningModule` reaches through its trainer: manual optimization, hparams, logging.

The GAN-style module is the shape Lightning documents for manual optimization: two optimizers,
`toggle_optimizer` around each update, `manual_backward`, and schedulers stepped by hand.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from boring import BoringModel, boring_loader, quiet_trainer
from torch import nn
from torch.nn import functional as F

import ltrain as pl
from ltrain.errors import MisconfigurationException
from ltrain.trainer.optimizers import LightningOptimizer

pytestmark = pytest.mark.filterwarnings("ignore:You defined a validation_step:UserWarning")


def real_samples(batches: int = 3, batch_size: int = 8) -> Any:
    generator = torch.Generator().manual_seed(0)
    return pl.data.TensorLoader(
        torch.randn(batches * batch_size, 4, generator=generator) + 3.0, batch_size=batch_size
    )


def _copy(grad: torch.Tensor | None) -> torch.Tensor | None:
    return None if grad is None else grad.clone()


def _same(a: torch.Tensor | None, b: torch.Tensor | None) -> bool:
    return (a is None and b is None) or (a is not None and b is not None and torch.equal(a, b))


class GAN(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.generator = nn.Linear(2, 4)
        self.discriminator = nn.Linear(4, 1)
        self.frozen_during_generator_step: list[bool] = []
        self.discriminator_grad_untouched_by_generator_step: list[bool] = []

    def training_step(self, batch: Any, batch_idx: int) -> None:
        (real,) = batch
        g_opt, d_opt = self.optimizers()
        g_sched, d_sched = self.lr_schedulers()
        ones, zeros = torch.ones(len(real), 1), torch.zeros(len(real), 1)
        z = torch.randn(len(real), 2)

        self.toggle_optimizer(g_opt)
        self.frozen_during_generator_step.append(
            not any(p.requires_grad for p in self.discriminator.parameters())
        )
        fake = self.generator(z)
        g_loss = F.binary_cross_entropy_with_logits(self.discriminator(fake), ones)
        g_opt.zero_grad()
        d_grad = _copy(self.discriminator.weight.grad)
        self.manual_backward(g_loss)
        self.discriminator_grad_untouched_by_generator_step.append(
            _same(d_grad, self.discriminator.weight.grad)
        )
        g_opt.step()
        self.untoggle_optimizer(g_opt)

        self.toggle_optimizer(d_opt)
        real_loss = F.binary_cross_entropy_with_logits(self.discriminator(real), ones)
        fake_loss = F.binary_cross_entropy_with_logits(self.discriminator(fake.detach()), zeros)
        d_loss = (real_loss + fake_loss) / 2
        d_opt.zero_grad()
        self.manual_backward(d_loss)
        d_opt.step()
        self.untoggle_optimizer(d_opt)

        if self.trainer.is_last_batch:
            g_sched.step()
            d_sched.step()
        self.log_dict({"g_loss": g_loss, "d_loss": d_loss}, prog_bar=True)

    def configure_optimizers(self) -> Any:
        g_opt = torch.optim.SGD(self.generator.parameters(), lr=0.1)
        d_opt = torch.optim.SGD(self.discriminator.parameters(), lr=0.1)
        schedulers = [
            torch.optim.lr_scheduler.StepLR(o, step_size=1, gamma=0.5) for o in (g_opt, d_opt)
        ]
        return [g_opt, d_opt], schedulers


def test_gan_under_manual_optimization_updates_both_networks(tmp_path):
    torch.manual_seed(0)
    model = GAN()
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    trainer = quiet_trainer(tmp_path, max_epochs=2, logger=False, enable_checkpointing=False)
    trainer.fit(model, real_samples(batches=3))

    for name, p in model.named_parameters():
        assert not torch.equal(before[name], p), f"{name} did not change"
    assert trainer.global_step == 2 * 3 * 2  # two optimizer steps per batch, 3 batches, 2 epochs
    assert trainer.current_epoch == 2
    assert set(trainer.callback_metrics) >= {"g_loss", "d_loss"}
    assert set(trainer.progress_bar_metrics) >= {"g_loss", "d_loss"}


def test_toggle_optimizer_freezes_the_other_networks_parameters_until_untoggled(tmp_path):
    torch.manual_seed(0)
    model = GAN()
    trainer = quiet_trainer(tmp_path, max_epochs=1, logger=False, enable_checkpointing=False)
    trainer.fit(model, real_samples(batches=2))
    assert model.frozen_during_generator_step == [True, True]
    assert model.discriminator_grad_untouched_by_generator_step == [True, True]
    assert all(p.requires_grad for p in model.parameters())


def test_lr_schedulers_returns_the_schedulers_stepped_by_hand(tmp_path):
    torch.manual_seed(0)
    model = GAN()
    trainer = quiet_trainer(tmp_path, max_epochs=2, logger=False, enable_checkpointing=False)
    trainer.fit(model, real_samples(batches=3))
    schedulers = model.lr_schedulers()
    assert isinstance(schedulers, list) and len(schedulers) == 2
    # stepped on the last batch of each epoch only: never by the trainer under manual optimization
    assert [s.get_last_lr() for s in schedulers] == [[0.025], [0.025]]


def test_optimizers_returns_one_wrapped_optimizer_when_there_is_one(tmp_path):
    seen: list[Any] = []

    class Single(BoringModel):
        def on_train_start(self) -> None:
            seen.extend([self.optimizers(), self.optimizers(use_pl_optimizer=False)])
            seen.append(self.lr_schedulers())

    trainer = quiet_trainer(tmp_path, max_epochs=1, logger=False)
    trainer.fit(Single(), boring_loader(16, 8))
    wrapped, plain, schedulers = seen
    assert isinstance(wrapped, LightningOptimizer) and wrapped.optimizer is plain
    assert isinstance(plain, torch.optim.SGD)
    assert wrapped.param_groups is plain.param_groups
    assert schedulers is None


def test_manual_backward_under_automatic_optimization_is_refused(tmp_path):
    class Confused(BoringModel):
        def training_step(self, batch: Any, batch_idx: int) -> Any:
            self.manual_backward(super().training_step(batch, batch_idx))

    trainer = quiet_trainer(tmp_path, max_epochs=1, logger=False)
    with pytest.raises(MisconfigurationException, match="automatic_optimization = False"):
        trainer.fit(Confused(), boring_loader(16, 8))


class ManualBoring(BoringModel):
    def __init__(self) -> None:
        super().__init__()
        self.automatic_optimization = False

    def training_step(self, batch: Any, batch_idx: int) -> None:
        optimizer = self.optimizers()
        optimizer.zero_grad()
        self.manual_backward(super().training_step(batch, batch_idx))
        optimizer.step()


@pytest.mark.parametrize(
    "option, value", [("accumulate_grad_batches", 2), ("gradient_clip_val", 1.0)]
)
def test_manual_optimization_refuses_trainer_options_it_cannot_honour(tmp_path, option, value):
    trainer = quiet_trainer(tmp_path, max_epochs=1, logger=False, **{option: value})
    with pytest.raises(MisconfigurationException, match=option):
        trainer.fit(ManualBoring(), boring_loader(16, 8))


def test_manual_optimization_global_step_counts_optimizer_steps(tmp_path):
    trainer = quiet_trainer(tmp_path, max_epochs=2, logger=False)
    trainer.fit(ManualBoring(), boring_loader(24, 8))
    assert trainer.global_step == 6


def test_estimated_stepping_batches_counts_the_optimizer_steps_of_the_fit(tmp_path):
    seen: list[Any] = []

    class OneCycle(BoringModel):
        def configure_optimizers(self) -> Any:
            seen.append(self.trainer.estimated_stepping_batches)
            optimizer = torch.optim.SGD(self.parameters(), lr=0.1)
            scheduler = torch.optim.lr_scheduler.OneCycleLR(
                optimizer, max_lr=0.1, total_steps=self.trainer.estimated_stepping_batches
            )
            return {
                "optimizer": optimizer,
                "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
            }

    trainer = quiet_trainer(tmp_path, max_epochs=3, logger=False, accumulate_grad_batches=2)
    trainer.fit(OneCycle(), boring_loader(40, 8))  # 5 batches: 3 steps per epoch
    assert seen == [9]
    assert trainer.global_step == 9


# ---------------------------------------------------------------------- hyperparameters


class WithHparams(BoringModel):
    def __init__(self, features: int = 4, lr: float = 0.1, name: str = "boring") -> None:
        super().__init__(features=features, lr=lr)
        self.save_hyperparameters()


def test_save_hyperparameters_captures_init_arguments():
    model = WithHparams(lr=0.5)
    assert dict(model.hparams) == {"features": 4, "lr": 0.5, "name": "boring"}
    assert model.hparams.lr == 0.5


def test_save_hyperparameters_ignore_and_names():
    class Picky(BoringModel):
        def __init__(self, features: int = 4, lr: float = 0.1, net: Any = None) -> None:
            super().__init__(features=features, lr=lr)
            self.save_hyperparameters(ignore=["net"])

    class OnlyLr(BoringModel):
        def __init__(self, features: int = 4, lr: float = 0.1) -> None:
            super().__init__(features=features, lr=lr)
            self.save_hyperparameters("lr")

    assert dict(Picky(net=nn.Linear(1, 1)).hparams) == {"features": 4, "lr": 0.1}
    assert dict(OnlyLr().hparams) == {"lr": 0.1}


def test_load_from_checkpoint_rebuilds_the_module_from_saved_hyperparameters(tmp_path):
    model = WithHparams(features=3, lr=0.5, name="three")
    trainer = quiet_trainer(tmp_path, max_epochs=1)
    trainer.fit(model, boring_loader(16, 8, features=3))
    path = trainer.checkpoint_callback.best_model_path

    loaded = WithHparams.load_from_checkpoint(path)
    assert dict(loaded.hparams) == {"features": 3, "lr": 0.5, "name": "three"}
    assert loaded.layer.in_features == 3
    torch.testing.assert_close(loaded.state_dict(), model.state_dict())
    overridden = WithHparams.load_from_checkpoint(path, lr=0.01)
    assert overridden.hparams.lr == 0.01


# ---------------------------------------------------------------------- logging


def test_log_outside_a_trainer_is_refused():
    with pytest.raises(MisconfigurationException, match="attached to a Trainer"):
        BoringModel().log("x", 1.0)


def test_log_in_predict_step_is_refused(tmp_path):
    class LogsInPredict(BoringModel):
        def predict_step(self, batch: Any, batch_idx: int) -> Any:
            self.log("x", 1.0)

    trainer = quiet_trainer(tmp_path, logger=False)
    with pytest.raises(MisconfigurationException, match="predict_step"):
        trainer.predict(LogsInPredict(), boring_loader(8, 8))


def test_module_counters_follow_the_trainer(tmp_path):
    seen: list[tuple[int, int]] = []

    class Watcher(BoringModel):
        def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
            seen.append((self.current_epoch, self.global_step))

    model = Watcher()
    assert (model.current_epoch, model.global_step) == (0, 0)
    trainer = quiet_trainer(tmp_path, max_epochs=2, logger=False)
    trainer.fit(model, boring_loader(16, 8))
    assert seen == [(0, 1), (0, 2), (1, 3), (1, 4)]
    assert model.trainer is trainer


def test_module_without_a_trainer_says_so():
    with pytest.raises(RuntimeError, match="not attached to a `Trainer`"):
        _ = BoringModel().trainer
