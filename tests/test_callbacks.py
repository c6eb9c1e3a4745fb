"""Tests of EarlyStopping and ModelCheckpoint as users see them: when fit stops, which files remain.

A scripted module logs a chosen `valid_loss` per epoch, so each test states the metric history
it depends on.
"""

from __future__ import annotations

import os
from typing import Any

import pytest
import torch
from boring import BoringModel, boring_loader, quiet_trainer

import ltrain as pl
from ltrain.callbacks import EarlyStopping, ModelCheckpoint
from ltrain.errors import MisconfigurationException

pytestmark = pytest.mark.filterwarnings("ignore:You defined a validation_step:UserWarning")


class Scripted(BoringModel):
    """Logs `valid_loss = history[current_epoch]` from validation."""

    def __init__(self, history: list[float]) -> None:
        super().__init__()
        self.history = history

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self.log("valid_loss", self.history[min(self.current_epoch, len(self.history) - 1)])


def fit(tmp_path: Any, model: BoringModel, callbacks: list[Any], **kwargs: Any) -> Any:
    options = {"max_epochs": len(getattr(model, "history", [1]))}
    options.update(kwargs)
    trainer = quiet_trainer(tmp_path, callbacks=callbacks, num_sanity_val_steps=0, **options)
    trainer.fit(model, boring_loader(16, 8), boring_loader(8, 8))
    return trainer


def checkpoint_files(folder: Any) -> list[str]:
    return sorted(os.listdir(folder))


# ---------------------------------------------------------------------- EarlyStopping


def test_early_stopping_fires_after_patience_and_says_why(tmp_path, capsys):
    stopper = EarlyStopping(monitor="valid_loss", patience=1)
    model = Scripted([1.0, 2.0, 0.5, 0.1])
    trainer = fit(tmp_path, model, [stopper], max_epochs=10, logger=False)
    # the 2nd epoch did not improve: stop after it
    assert stopper.stopped_epoch == 1
    assert trainer.current_epoch == 2
    assert trainer.global_step == 4
    assert trainer.should_stop
    reason = (
        "Monitored metric valid_loss did not improve in the last 1 records. Best score: 1.000. "
        "Signaling Trainer to stop."
    )
    assert stopper.stopping_reason_message == reason
    assert reason in capsys.readouterr().out


def test_early_stopping_waits_patience_epochs_without_improvement(tmp_path):
    stopper = EarlyStopping(monitor="valid_loss", patience=3)
    model = Scripted([1.0, 0.9, 1.0, 1.0, 0.95, 1.0, 0.1])
    trainer = fit(tmp_path, model, [stopper], max_epochs=10, logger=False)
    assert stopper.stopped_epoch == 4
    assert trainer.current_epoch == 5
    assert stopper.best_score == pytest.approx(0.9)


def test_early_stopping_in_max_mode_stops_when_the_metric_stops_rising(tmp_path):
    stopper = EarlyStopping(monitor="valid_loss", mode="max", patience=1)
    model = Scripted([1.0, 2.0, 1.5, 3.0])
    trainer = fit(tmp_path, model, [stopper], max_epochs=10, logger=False)
    assert stopper.stopped_epoch == 2
    assert trainer.current_epoch == 3


def test_early_stopping_min_delta_counts_small_gains_as_no_improvement(tmp_path):
    stopper = EarlyStopping(monitor="valid_loss", min_delta=0.1, patience=2)
    model = Scripted([1.0, 0.95, 0.91, 0.5])
    trainer = fit(tmp_path, model, [stopper], max_epochs=10, logger=False)
    assert stopper.stopped_epoch == 2
    assert trainer.current_epoch == 3


def test_early_stopping_on_a_metric_never_logged_lists_the_logged_ones(tmp_path):
    stopper = EarlyStopping(monitor="val_acc")
    with pytest.raises(RuntimeError) as refused:  # Lightning's type
        fit(tmp_path, Scripted([1.0]), [stopper], logger=False)
    message = str(refused.value)
    assert "val_acc" in message and "train_loss" in message and "valid_loss" in message


def test_early_stopping_with_strict_false_ignores_a_missing_metric(tmp_path):
    stopper = EarlyStopping(monitor="val_acc", strict=False, patience=0)
    trainer = fit(tmp_path, Scripted([1.0, 1.0, 1.0]), [stopper], logger=False)
    assert trainer.current_epoch == 3


def test_early_stopping_respects_min_epochs(tmp_path):
    stopper = EarlyStopping(monitor="valid_loss", patience=1)
    model = Scripted([1.0, 2.0, 2.0, 2.0, 2.0, 2.0])
    trainer = fit(tmp_path, model, [stopper], max_epochs=10, min_epochs=4, logger=False)
    assert trainer.current_epoch == 4
    assert stopper.stopped_epoch == 3


def test_early_stopping_stops_on_a_non_finite_metric(tmp_path):
    stopper = EarlyStopping(monitor="valid_loss", patience=5)
    trainer = fit(tmp_path, Scripted([1.0, float("nan"), 0.5]), [stopper], logger=False)
    assert trainer.current_epoch == 2
    assert "is not finite" in stopper.stopping_reason_message


def test_early_stopping_refuses_an_unknown_mode():
    with pytest.raises(MisconfigurationException, match="'min' or 'max'"):
        EarlyStopping(monitor="valid_loss", mode="lowest")


# ---------------------------------------------------------------------- ModelCheckpoint


def test_without_monitor_only_the_latest_checkpoint_is_kept(tmp_path):
    trainer = quiet_trainer(tmp_path, max_epochs=2, num_sanity_val_steps=0)
    trainer.fit(BoringModel(), boring_loader(47, 1))
    folder = tmp_path / "lightning_logs" / "version_0" / "checkpoints"
    assert checkpoint_files(folder) == ["epoch=1-step=94.ckpt"]
    assert trainer.checkpoint_callback.best_model_path == str(folder / "epoch=1-step=94.ckpt")


def test_monitor_with_top_2_and_last_keeps_the_two_best_and_last(tmp_path):
    checkpoint = ModelCheckpoint(
        dirpath=tmp_path / "ckpts", monitor="valid_loss", save_top_k=2, save_last=True
    )
    # steps are 2 per epoch: epochs 1 (0.5) and 3 (0.7) are the best two
    fit(tmp_path, Scripted([3.0, 0.5, 2.0, 0.7, 0.9]), [checkpoint], logger=False)
    assert checkpoint_files(tmp_path / "ckpts") == [
        "epoch=1-step=4.ckpt",
        "epoch=3-step=8.ckpt",
        "last.ckpt",
    ]
    assert checkpoint.best_model_path == str(tmp_path / "ckpts" / "epoch=1-step=4.ckpt")
    assert isinstance(checkpoint.best_model_score, torch.Tensor)  # as in Lightning
    assert checkpoint.best_model_score.item() == pytest.approx(0.5)
    assert checkpoint.last_model_path == str(tmp_path / "ckpts" / "last.ckpt")
    assert sorted(checkpoint.best_k_models.values()) == pytest.approx([0.5, 0.7])


def test_monitor_in_max_mode_keeps_the_highest(tmp_path):
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpts", monitor="valid_loss", mode="max")
    fit(tmp_path, Scripted([1.0, 3.0, 2.0]), [checkpoint], logger=False)
    assert checkpoint_files(tmp_path / "ckpts") == ["epoch=1-step=4.ckpt"]
    assert checkpoint.best_model_score.item() == pytest.approx(3.0)


def test_filename_template_inserts_metric_names_and_formats(tmp_path):
    checkpoint = ModelCheckpoint(
        dirpath=tmp_path / "ckpts", filename="{epoch}-{valid_loss:.2f}", monitor="valid_loss"
    )
    fit(tmp_path, Scripted([3.0, 2.5, 1.9123]), [checkpoint], logger=False)
    assert checkpoint_files(tmp_path / "ckpts") == ["epoch=2-valid_loss=1.91.ckpt"]


def test_filename_template_without_metric_names(tmp_path):
    checkpoint = ModelCheckpoint(
        dirpath=tmp_path / "ckpts",
        filename="best-{epoch:02d}-{valid_loss:.1f}",
        monitor="valid_loss",
        auto_insert_metric_name=False,
    )
    fit(tmp_path, Scripted([1.25]), [checkpoint], logger=False)
    assert checkpoint_files(tmp_path / "ckpts") == ["best-00-1.2.ckpt"]


def test_filename_template_naming_an_unlogged_metric_lists_the_logged_ones(tmp_path):
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpts", filename="{epoch}-{val_acc:.2f}")
    with pytest.raises(MisconfigurationException, match="'val_acc'.*valid_loss"):
        fit(tmp_path, Scripted([1.0]), [checkpoint], logger=False)


def test_verbose_prints_each_save_in_lightnings_format(tmp_path, capsys):
    folder = tmp_path / "ckpts"
    checkpoint = ModelCheckpoint(dirpath=folder, monitor="valid_loss", save_top_k=2, verbose=True)
    fit(tmp_path, Scripted([2.200191, 1.5, 3.0]), [checkpoint], logger=False)
    out = capsys.readouterr().out
    first = folder / "epoch=0-step=2.ckpt"
    second = folder / "epoch=1-step=4.ckpt"
    assert (
        f"Epoch 0, global step 2: 'valid_loss' reached 2.20019 (best 2.20019), saving model to "
        f"'{first}' as top 2"
    ) in out
    assert (
        f"Epoch 1, global step 4: 'valid_loss' reached 1.50000 (best 1.50000), saving model to "
        f"'{second}' as top 2"
    ) in out
    assert "Epoch 2, global step 6: 'valid_loss' was not in top 2" in out


def test_monitor_never_logged_is_a_clear_error(tmp_path):
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpts", monitor="val_acc")
    with pytest.raises(MisconfigurationException, match="'val_acc'.*valid_loss"):
        fit(tmp_path, Scripted([1.0]), [checkpoint], logger=False)


def test_top_k_without_monitor_is_refused():
    with pytest.raises(MisconfigurationException, match="save_top_k=2, monitor=None"):
        ModelCheckpoint(save_top_k=2)


def test_checkpoint_loads_as_plain_data_with_attribute_named_keys(tmp_path):
    model = BoringModel()
    trainer = quiet_trainer(tmp_path, max_epochs=1, num_sanity_val_steps=0)
    trainer.fit(model, boring_loader(16, 8))
    checkpoint = torch.load(trainer.checkpoint_callback.best_model_path, weights_only=True)
    assert sorted(checkpoint["state_dict"]) == ["layer.bias", "layer.weight"]
    assert torch.equal(checkpoint["state_dict"]["layer.weight"], model.layer.weight)
    assert checkpoint["epoch"] == 0 and checkpoint["global_step"] == 2
    assert {"optimizer_states", "lr_schedulers"} <= set(checkpoint)


def test_save_weights_only_leaves_out_the_optimizer(tmp_path):
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpts", save_weights_only=True)
    fit(tmp_path, Scripted([1.0]), [checkpoint], logger=False)
    saved = torch.load(checkpoint.best_model_path, weights_only=True)
    assert "optimizer_states" not in saved and "state_dict" in saved


def test_test_with_ckpt_path_best_uses_the_best_weights(tmp_path):
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpts", monitor="valid_loss")
    seen: list[torch.Tensor] = []

    class Recorder(Scripted):
        def on_test_start(self) -> None:
            seen.append(self.layer.weight.detach().clone())

    model = Recorder([0.1, 1.0, 2.0])  # epoch 0 is the best
    trainer = fit(tmp_path, model, [checkpoint], logger=False)
    assert checkpoint.best_model_path.endswith("epoch=0-step=2.ckpt")
    best = torch.load(checkpoint.best_model_path, weights_only=True)["state_dict"]
    assert not torch.equal(best["layer.weight"], model.layer.weight)
    [metrics] = trainer.test(ckpt_path="best", dataloaders=boring_loader(8, 8), verbose=False)
    assert torch.equal(seen[0], best["layer.weight"])
    assert "test_loss" in metrics


def test_ckpt_path_best_without_any_checkpoint_is_a_clear_error(tmp_path):
    trainer = quiet_trainer(tmp_path, enable_checkpointing=False, logger=False)
    with pytest.raises(MisconfigurationException, match="ckpt_path='best'"):
        trainer.test(BoringModel(), boring_loader(8, 8), ckpt_path="best")


def test_checkpoint_folder_holds_no_temporary_files(tmp_path):
    checkpoint = ModelCheckpoint(
        dirpath=tmp_path / "ckpts", monitor="valid_loss", save_top_k=2, save_last=True
    )
    fit(tmp_path, Scripted([3.0, 2.0, 1.0, 0.5]), [checkpoint], logger=False)
    names = checkpoint_files(tmp_path / "ckpts")
    assert all(name.endswith(".ckpt") and not name.startswith(".") for name in names), names


def test_every_n_train_steps_saves_during_the_epoch(tmp_path):
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpts", every_n_train_steps=3, save_top_k=-1)
    trainer = quiet_trainer(tmp_path, max_epochs=2, logger=False, callbacks=[checkpoint])
    trainer.fit(BoringModel(), boring_loader(32, 8))  # 4 batches per epoch, 8 steps
    assert checkpoint_files(tmp_path / "ckpts") == ["epoch=0-step=3.ckpt", "epoch=1-step=6.ckpt"]


def test_default_checkpoint_dir_is_inside_the_loggers_version_folder(tmp_path):
    trainer = quiet_trainer(tmp_path, max_epochs=1, num_sanity_val_steps=0)
    trainer.fit(BoringModel(), boring_loader(16, 8))
    expected = os.path.join(trainer.log_dir, "checkpoints")
    assert trainer.checkpoint_callback.dirpath == expected
    assert os.path.isdir(expected)


def test_a_name_taken_in_the_folder_gets_a_version_as_in_lightning(tmp_path):
    folder = tmp_path / "ckpts"
    for _ in range(2):
        checkpoint = ModelCheckpoint(dirpath=folder, save_last=True)
        fit(tmp_path, Scripted([1.0]), [checkpoint], logger=False)
    assert checkpoint_files(folder) == [
        "epoch=0-step=2-v1.ckpt", "epoch=0-step=2.ckpt", "last-v1.ckpt", "last.ckpt",
    ]  # fmt: skip
    assert checkpoint.best_model_path == str(folder / "epoch=0-step=2-v1.ckpt")
    assert checkpoint.last_model_path == str(folder / "last-v1.ckpt")


def test_without_a_monitor_no_file_gets_a_score(tmp_path):
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpts", every_n_train_steps=3, save_top_k=-1)
    trainer = quiet_trainer(tmp_path, max_epochs=2, logger=False, callbacks=[checkpoint])
    trainer.fit(BoringModel(), boring_loader(48, 8))  # 6 batches per epoch
    assert checkpoint_files(tmp_path / "ckpts") == [
        "epoch=0-step=3.ckpt", "epoch=0-step=6.ckpt", "epoch=1-step=12.ckpt", "epoch=1-step=9.ckpt",
    ]  # fmt: skip
    assert checkpoint.best_k_models == {}  # Lightning tracks scores only for a monitor
    assert checkpoint.best_model_path.endswith("epoch=1-step=12.ckpt")
    assert checkpoint.best_model_score is None


def saved_step(path: Any) -> int:
    return torch.load(path, weights_only=True)["global_step"]


def test_last_ckpt_is_rewritten_with_each_checkpoint_file(tmp_path):
    """An epoch that saves no top-k file leaves last.ckpt as it was, as in Lightning."""
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpts", monitor="valid_loss", save_last=True)
    fit(tmp_path, Scripted([2.0, 1.0, 3.0]), [checkpoint], logger=False)
    assert checkpoint_files(tmp_path / "ckpts") == ["epoch=1-step=4.ckpt", "last.ckpt"]
    assert saved_step(checkpoint.last_model_path) == 4


@pytest.mark.parametrize("options", [{"save_top_k": 0}, {"every_n_epochs": 5}])
def test_a_fit_that_saves_no_file_still_ends_with_last_ckpt(tmp_path, options):
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpts", save_last=True, **options)
    fit(tmp_path, Scripted([2.0, 1.0, 3.0]), [checkpoint], logger=False)
    assert checkpoint_files(tmp_path / "ckpts") == ["last.ckpt"]
    assert saved_step(checkpoint.last_model_path) == 6


def test_a_step_triggered_save_waits_for_the_validation_its_metric_comes_from(tmp_path):
    checkpoint = ModelCheckpoint(
        dirpath=tmp_path / "ckpts", monitor="valid_loss", every_n_train_steps=1, save_top_k=-1
    )
    # 2 batches per epoch, each followed by validation. As in Lightning: step 1 waits for the
    # first validation; step 3 saves at once with the value it has; step 4 (the epoch's last
    # batch) waits for the validation right after it, which brings epoch 1's value
    fit(tmp_path, Scripted([3.0, 2.0]), [checkpoint], logger=False, val_check_interval=0.5)
    scores = {os.path.basename(path): score for path, score in checkpoint.best_k_models.items()}
    assert scores == {
        "epoch=0-step=1.ckpt": 3.0, "epoch=0-step=2.ckpt": 3.0,
        "epoch=1-step=3.ckpt": 3.0, "epoch=1-step=4.ckpt": 2.0,
    }  # fmt: skip


def test_early_stopping_is_not_checked_by_validate(tmp_path):
    stopper = EarlyStopping(monitor="train_loss_epoch", check_on_train_epoch_end=False)
    trainer = quiet_trainer(tmp_path, callbacks=[stopper], logger=False)
    trainer.validate(BoringModel(), boring_loader(8, 8), verbose=False)  # no "never logged"
    assert not trainer.should_stop and stopper.wait_count == 0


def test_early_stopping_on_a_metric_not_there_yet_raises_lightnings_runtime_error(tmp_path):
    """After validation, a training epoch metric is not logged yet: Lightning's RuntimeError."""
    stopper = EarlyStopping(monitor="train_loss_epoch", check_on_train_epoch_end=False)
    with pytest.raises(
        RuntimeError, match=r"conditioned on metric `train_loss_epoch` which is not"
    ):
        fit(tmp_path, Scripted([1.0]), [stopper], logger=False)


# ---------------------------------------------------------------------- test() after fit()
def test_test_without_a_model_after_fit_loads_the_best_checkpoint(tmp_path):
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpts", monitor="valid_loss")
    trainer = fit(tmp_path, Scripted([0.1, 1.0, 2.0]), [checkpoint], logger=False)
    best = torch.load(checkpoint.best_model_path, weights_only=True)["state_dict"]
    assert not torch.equal(best["layer.weight"], trainer.lightning_module.layer.weight)
    with pytest.warns(UserWarning, match=r"The best model of the previous `fit` call will be used"):
        trainer.test(dataloaders=boring_loader(8, 8), verbose=False)
    assert trainer.ckpt_path == checkpoint.best_model_path
    assert torch.equal(best["layer.weight"], trainer.lightning_module.layer.weight)


def test_test_without_a_model_or_a_saved_checkpoint_tests_the_fitted_module(tmp_path):
    trainer = fit(tmp_path, Scripted([0.1]), [], logger=False, enable_checkpointing=False)
    weights = trainer.lightning_module.layer.weight.detach().clone()
    [metrics] = trainer.test(dataloaders=boring_loader(8, 8), verbose=False)
    assert "test_loss" in metrics and trainer.ckpt_path is None
    assert torch.equal(weights, trainer.lightning_module.layer.weight)


# ---------------------------------------------------------------------- configure_callbacks


class OwnCheckpointing(Scripted):
    def __init__(self, history: list[float], folder: Any) -> None:
        super().__init__(history)
        self.folder = folder

    def configure_callbacks(self) -> Any:
        return ModelCheckpoint(dirpath=self.folder, monitor="valid_loss", filename="{epoch}")


def test_a_modules_callback_replaces_the_trainers_of_the_same_type(tmp_path, capsys):
    model = OwnCheckpointing([2.0, 1.0, 3.0], tmp_path / "own")
    trainer = fit(tmp_path, model, [], logger=False)
    [checkpoint] = trainer.checkpoint_callbacks
    assert checkpoint.monitor == "valid_loss"
    assert checkpoint_files(tmp_path / "own") == ["epoch=1.ckpt"]
    assert "will override existing callbacks passed to Trainer: ModelCheckpoint" in (
        capsys.readouterr().out
    )


def test_ckpt_path_best_names_the_fits_checkpoint_even_when_the_module_brings_its_own(tmp_path):
    model = OwnCheckpointing([2.0, 1.0, 3.0], tmp_path / "own")
    trainer = fit(tmp_path, model, [], logger=False)
    [metrics] = trainer.test(ckpt_path="best", dataloaders=boring_loader(8, 8), verbose=False)
    assert "test_loss" in metrics


def test_a_modules_callback_of_a_new_type_is_added_before_checkpointing(tmp_path):
    class WithStopper(Scripted):
        def configure_callbacks(self) -> Any:
            return [EarlyStopping(monitor="valid_loss", patience=0)]

    trainer = fit(tmp_path, WithStopper([1.0, 2.0, 3.0]), [], logger=False)
    assert trainer.current_epoch == 2
    assert isinstance(trainer.callbacks[-1], ModelCheckpoint)
    assert sum(isinstance(c, EarlyStopping) for c in trainer.callbacks) == 1


def test_lambda_callback_refuses_a_name_that_is_not_a_hook():
    from ltrain.callbacks import LambdaCallback

    with pytest.raises(TypeError, match="'on_epoch_end', which is not a callback hook"):
        LambdaCallback(on_epoch_end=print)


def test_backbone_finetuning_needs_a_backbone(tmp_path):
    from ltrain.callbacks import BackboneFinetuning

    trainer = quiet_trainer(tmp_path, max_epochs=1, callbacks=[BackboneFinetuning()])
    with pytest.raises(MisconfigurationException, match="nn.Module `backbone` attribute"):
        trainer.fit(BoringModel(), boring_loader())


class _FailsAtBatchThree(BoringModel):
    def training_step(self, batch, batch_idx):
        if batch_idx == 3:
            raise RuntimeError("boom")
        return super().training_step(batch, batch_idx)


def test_on_exception_checkpoint_saves_a_resumable_checkpoint_when_the_run_raises(tmp_path):
    from ltrain.callbacks import OnExceptionCheckpoint

    saver = OnExceptionCheckpoint(tmp_path / "saved")
    trainer = quiet_trainer(tmp_path, max_epochs=1, callbacks=[saver])
    assert trainer.checkpoint_callback is saver  # it replaces the default ModelCheckpoint
    with pytest.raises(RuntimeError, match="boom"):
        trainer.fit(_FailsAtBatchThree(), boring_loader())
    assert os.listdir(tmp_path / "saved") == ["on_exception.ckpt"]
    assert torch.load(saver.ckpt_path, weights_only=False)["global_step"] == 3
    resumed = quiet_trainer(
        tmp_path, max_epochs=1, callbacks=[OnExceptionCheckpoint(tmp_path / "saved")]
    )
    resumed.fit(BoringModel(), boring_loader(), ckpt_path=saver.ckpt_path)
    assert resumed.global_step == len(boring_loader())
    assert not os.path.exists(saver.ckpt_path)  # a run that ends well removes the stale file


def test_teardown_hooks_are_skipped_when_a_run_raises(tmp_path):
    calls = []

    class Records(pl.Callback):
        def teardown(self, trainer, pl_module, stage):
            calls.append(stage)

    with pytest.raises(RuntimeError, match="boom"):
        quiet_trainer(tmp_path, max_epochs=1, callbacks=[Records()]).fit(
            _FailsAtBatchThree(), boring_loader()
        )
    assert calls == []
    quiet_trainer(tmp_path, max_epochs=1, callbacks=[Records()]).fit(BoringModel(), boring_loader())
    assert calls == ["fit"]


def test_max_time_adds_a_timer_and_takes_lightnings_three_forms(tmp_path):
    from datetime import timedelta

    from ltrain.callbacks import Timer

    for given in ("01:02:03:04", {"days": 1, "hours": 2, "minutes": 3, "seconds": 4},
                  timedelta(days=1, hours=2, minutes=3, seconds=4)):  # fmt: skip
        trainer = quiet_trainer(tmp_path, max_time=given)
        (timer,) = [c for c in trainer.callbacks if isinstance(c, Timer)]
        assert timer.time_remaining() == 93784
        assert trainer.max_epochs == -1  # time, not the default 1000 epochs, ends the fit
    mine = Timer(duration="00:00:00:05")
    trainer = quiet_trainer(tmp_path, max_time="00:01:00:00", callbacks=[mine])
    assert [c for c in trainer.callbacks if isinstance(c, Timer)] == [mine]


@pytest.mark.parametrize("bad", ["2h", "1:2:3", {"fortnights": 1}, 12])
def test_max_time_in_another_form_is_refused_naming_the_forms(tmp_path, bad):
    with pytest.raises(
        MisconfigurationException, match=r"max_time=.*expected a time as 'DD:HH:MM:SS'"
    ):
        quiet_trainer(tmp_path, max_time=bad)
