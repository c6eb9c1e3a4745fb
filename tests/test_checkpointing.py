"""Tests of resuming fit from a checkpoint (`ckpt_path`): the loop position it records."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from boring import BoringModel, boring_loader, quiet_trainer, random_regression

import ltrain as pl
from ltrain.data import TensorLoader
from ltrain.errors import MisconfigurationException

# most fits here have no val loader on purpose; one test checks that warning itself
pytestmark = pytest.mark.filterwarnings("ignore:You defined a validation_step:UserWarning")


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


class ReadCountingLoader(TensorLoader):
    """A TensorLoader that counts the batches it cuts from its tensors."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.read = 0

    def _batches(self, epoch: int, start: int) -> Any:
        for batch in super()._batches(epoch, start):
            self.read += 1
            yield batch


def test_a_mid_epoch_resume_reads_no_tensor_loader_batch_before_the_resume_point(tmp_path):
    checkpoint = pl.callbacks.ModelCheckpoint(dirpath=tmp_path / "b", every_n_train_steps=3)
    first = quiet_trainer(tmp_path, max_steps=3, logger=False, callbacks=[checkpoint])
    first.fit(BoringModel(), boring_loader(32, 8, shuffle=True))  # stops after batch 2 of 4

    loader = ReadCountingLoader(*random_regression(32), batch_size=8, shuffle=True)
    second = quiet_trainer(tmp_path / "c", max_epochs=1, logger=False)
    second.fit(BoringModel(), loader, ckpt_path=checkpoint.best_model_path)
    assert second.global_step == 4
    assert loader.read == 1  # batch 3 only: the TensorLoader starts there itself
