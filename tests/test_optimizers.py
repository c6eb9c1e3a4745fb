"""Tests of `configure_optimizers`: its return forms, scheduler configs and when schedulers step."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from boring import BoringModel, boring_loader, fit_briefly, quiet_trainer
from torch.nn import functional as F

import ltrain as pl
from ltrain.errors import MisconfigurationException

# most fits here have no val loader on purpose; one test checks that warning itself
pytestmark = pytest.mark.filterwarnings("ignore:You defined a validation_step:UserWarning")


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


class Halving:
    """A scheduler of the user's own (no PyTorch base class) that halves the lr when updated."""

    def __init__(self, optimizer: torch.optim.Optimizer) -> None:
        self.optimizer = optimizer

    def update(self) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] /= 2

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


class ManualWithScheduler(BoringModel):
    """Manual optimization that steps its scheduler itself at each epoch's last batch."""

    def __init__(self, returns: Any) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.returns = returns

    def training_step(self, batch: Any, batch_idx: int) -> None:
        optimizer = self.optimizers()
        loss = F.mse_loss(self(batch[0]), batch[1])
        optimizer.zero_grad()
        self.manual_backward(loss)
        optimizer.step()
        if self.trainer.is_last_batch:
            scheduler = self.lr_schedulers()
            if isinstance(scheduler, Halving):
                scheduler.update()
            else:
                scheduler.step(1.0)  # a plateau: never better than the first epoch's 1.0

    def configure_optimizers(self) -> Any:
        return self.returns(self)


def test_manual_optimization_takes_a_plateau_scheduler_without_a_monitor(tmp_path):
    def returns(module: Any) -> Any:
        optimizer = sgd(module, 0.1)
        plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, patience=0, factor=0.5)
        return [optimizer], [plateau]

    trainer = fit_briefly(tmp_path, ManualWithScheduler(returns), epochs=3)

    # stepped by the module only: epoch 0 sets the best, epochs 1 and 2 each halve
    assert lr_of(trainer) == pytest.approx(0.025)


def test_manual_optimization_takes_a_scheduler_of_the_users_own_without_step(tmp_path):
    def returns(module: Any) -> Any:
        optimizer = sgd(module, 0.1)
        return {"optimizer": optimizer, "lr_scheduler": Halving(optimizer)}

    trainer = fit_briefly(tmp_path, ManualWithScheduler(returns), epochs=2)

    assert lr_of(trainer) == pytest.approx(0.025)


def test_monitor_in_a_manual_scheduler_dict_warns_that_it_is_ignored(tmp_path):
    def returns(module: Any) -> Any:
        optimizer = sgd(module, 0.1)
        plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, patience=0, factor=0.5)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": plateau, "monitor": "x"}}

    with pytest.warns(RuntimeWarning, match=r"key\(s\) \['monitor'\].*ignored"):
        trainer = fit_briefly(tmp_path, ManualWithScheduler(returns), epochs=1)
    assert trainer.lr_scheduler_configs[0].monitor is None


def test_a_scheduler_without_step_works_through_the_modules_lr_scheduler_step(tmp_path):
    class OwnStep(OptimizerModel):
        def lr_scheduler_step(self, scheduler: Any, metric: Any) -> None:
            scheduler.update()

    def returns(module: Any) -> Any:
        optimizer = sgd(module)
        return {"optimizer": optimizer, "lr_scheduler": Halving(optimizer)}

    trainer = fit_briefly(tmp_path, OwnStep(returns), epochs=3)
    assert lr_of(trainer) == pytest.approx(0.125)

    with pytest.raises(MisconfigurationException, match="Halving has no step\\(\\).*override"):
        fit_briefly(tmp_path, OptimizerModel(returns))


def test_a_scheduler_without_state_dict_is_refused_in_either_mode(tmp_path):
    class Stateless:
        def __init__(self, optimizer: torch.optim.Optimizer) -> None:
            self.optimizer = optimizer

        def step(self) -> None:
            pass

    def returns(module: Any) -> Any:
        optimizer = sgd(module)
        return [optimizer], [Stateless(optimizer)]

    for model in (OptimizerModel(returns), ManualWithScheduler(returns)):
        with pytest.raises(MisconfigurationException, match="Stateless has no state_dict"):
            fit_briefly(tmp_path, model)


def test_a_lightning_optimizer_deep_copies_and_a_second_fit_with_swa_runs(tmp_path):
    import copy

    from boring import BoringModel, boring_loader, quiet_trainer

    from ltrain.callbacks import StochasticWeightAveraging

    trainer = quiet_trainer(
        tmp_path, max_epochs=2, callbacks=[StochasticWeightAveraging(swa_lrs=0.01)]
    )
    model = BoringModel()
    trainer.fit(model, boring_loader())
    copied = copy.deepcopy(trainer.lightning_optimizers[0])  # AveragedModel copies the module
    assert copied.param_groups[0]["lr"] == trainer.optimizers[0].param_groups[0]["lr"]
    trainer.fit(model, boring_loader())  # it used to recurse forever in __getattr__
    assert trainer.current_epoch == 2
