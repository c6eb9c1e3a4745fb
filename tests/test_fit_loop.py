"""Tests of the fit loop: counters, limits, stop conditions, accumulation, clipping, what
training_step may return, and when validation runs during fit."""

from __future__ import annotations

import random
import traceback
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from boring import BoringModel, boring_loader, fit_briefly, quiet_trainer, random_regression
from torch.nn import functional as F

import ltrain as pl
from ltrain.callbacks.base import Callback
from ltrain.errors import MisconfigurationException

# most fits here have no val loader on purpose; one test checks that warning itself
pytestmark = pytest.mark.filterwarnings("ignore:You defined a validation_step:UserWarning")


def test_two_epochs_of_47_batches_end_at_epoch_2_step_94(tmp_path):
    trainer = quiet_trainer(tmp_path, max_epochs=2, logger=False, enable_checkpointing=False)
    trainer.fit(BoringModel(), boring_loader(47, 1))
    assert trainer.current_epoch == 2
    assert trainer.global_step == 94


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


def test_a_standing_stop_request_writes_a_step_row_every_batch(tmp_path):
    # Lightning's should_update_logs: every log_every_n_steps batches, or any batch while
    # should_stop is set (here while min_epochs keeps training going)
    trainer = quiet_trainer(
        tmp_path, max_epochs=10, min_epochs=2, log_every_n_steps=50, callbacks=[StopRequester()]
    )
    trainer.fit(BoringModel(), boring_loader(24, 8))  # 3 batches per epoch
    metrics = (Path(trainer.logger.log_dir) / "metrics.csv").read_text().splitlines()
    steps = [row.split(",")[1] for row in metrics[1:] if row.split(",")[2]]
    assert steps == ["3", "4", "5"]  # the second epoch's batches only


def test_limit_train_batches_zero_runs_no_training_hook_and_no_epoch(tmp_path):
    model = ValidationCounter()
    trainer = quiet_trainer(tmp_path, max_epochs=2, logger=False, limit_train_batches=0)
    trainer.fit(model, boring_loader(16, 8), boring_loader(16, 8))
    assert trainer.current_epoch == 0 and model.validated_at == []
    assert model.sanity_batches == 2  # the sanity check still runs, as in Lightning
    assert not list(tmp_path.rglob("*.ckpt"))


def test_a_granted_stop_request_validates_before_stopping_mid_epoch(tmp_path):
    class StopAtThirdBatch(Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            trainer.should_stop = batch_idx == 2

    model = ValidationCounter()
    trainer = quiet_trainer(
        tmp_path, max_epochs=3, logger=False, val_check_interval=5, callbacks=[StopAtThirdBatch()]
    )
    trainer.fit(model, boring_loader(80, 8), boring_loader(8, 8))
    assert model.validated_at == [3] and trainer.global_step == 3


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


def test_validation_step_without_val_loader_warns_and_skips_validation(tmp_path):
    model = CountingModel()
    trainer = quiet_trainer(tmp_path, max_epochs=1, logger=False)
    with pytest.warns(
        UserWarning,
        match="You defined a validation_step but have no val_dataloader. Skipping val loop.",
    ):
        trainer.fit(model, boring_loader(16, 8))
    assert model.val_batches == []


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


def test_int_val_check_interval_without_check_val_every_n_epoch_counts_batches_across_epochs(
    tmp_path,
):
    # Lightning 2.6.6, run side by side on 10 batches an epoch: validation after global batches
    # 25, 50 and 75 (epoch 2 batch 4, epoch 4 batch 9, epoch 7 batch 4), not at epoch ends
    model = ValidationCounter()
    trainer = quiet_trainer(
        tmp_path,
        max_epochs=8,
        logger=False,
        val_check_interval=25,
        check_val_every_n_epoch=None,
    )
    trainer.fit(model, boring_loader(80, 8), boring_loader(8, 8))
    assert model.validated_at == [25, 50, 75]


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


def test_sanity_check_leaves_every_generator_as_it_found_it(tmp_path):
    # its loader's iterator draws a seed from torch's generator, and a step may draw from any:
    # training then draws the same numbers with the check as without it, as in Lightning
    class Drawing(BoringModel):
        def validation_step(self, batch: Any, batch_idx: int) -> None:
            torch.rand(1), np.random.rand(), random.random()
            super().validation_step(batch, batch_idx)

        def on_train_start(self) -> None:
            self.drawn = (torch.rand(1).item(), np.random.rand(), random.random())

    def drawn_at_train_start(steps: int) -> tuple[float, float, float]:
        pl.seed_everything(0)
        model = Drawing()
        trainer = quiet_trainer(tmp_path, max_epochs=1, logger=False, num_sanity_val_steps=steps)
        dataset = torch.utils.data.TensorDataset(*random_regression(16))
        trainer.fit(model, boring_loader(8, 8), torch.utils.data.DataLoader(dataset, 8))
        return model.drawn

    assert drawn_at_train_start(2) == drawn_at_train_start(0)


def test_fit_reaches_loss_backward_through_the_frames_the_trainer_docstring_lists(tmp_path):
    stacks: list[list[traceback.FrameSummary]] = []

    class Recorder(BoringModel):
        def on_before_backward(self, loss: torch.Tensor) -> None:
            stacks.append(traceback.extract_stack())

    quiet_trainer(tmp_path, max_steps=1, logger=False).fit(Recorder(), boring_loader(16, 8))
    frames = [(f.filename.replace("\\", "/"), f.name) for f in stacks[0]]
    start = next(
        i for i, (file, name) in enumerate(frames) if file.endswith("trainer.py") and name == "fit"
    )
    end = next(i for i, (file, name) in enumerate(frames) if name == "backward")
    path = frames[start : end + 1]
    ours = [f"{file.rsplit('/ltrain/', 1)[1]}:{name}" for file, name in path if "/ltrain/" in file]
    assert ours == [
        "trainer/trainer.py:fit",
        "trainer/trainer.py:_run",
        "trainer/fit_loop.py:fit_loop",
        "trainer/fit_loop.py:train_epoch",
        "trainer/fit_loop.py:train_batch",
        "trainer/optimizers.py:step_optimizer",
        "precision.py:optimizer_step",
        "precision.py:closure_then_hooks",
        "trainer/fit_loop.py:closure",
        "trainer/fit_loop.py:backward",
    ]
    torch_frames = [name for file, name in path if "/ltrain/" not in file]
    assert torch_frames == ["wrapper", "_use_grad", "step"]  # torch's Optimizer.step, SGD's
