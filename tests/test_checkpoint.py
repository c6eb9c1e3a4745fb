"""Checkpoint files: plain data, atomic writes, and refusal of anything that would run code."""

from __future__ import annotations

import os

import pytest
import torch

from ltrain.checkpoint import UnsafeCheckpointError, load_checkpoint, save_checkpoint


class _Payload:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def test_saved_checkpoint_loads_with_weights_only(tmp_path):
    path = tmp_path / "a.ckpt"
    save_checkpoint({"state_dict": {"w": torch.ones(2)}, "epoch": 1, "names": ("a", "b")}, path)
    loaded = torch.load(path, weights_only=True)
    assert loaded["epoch"] == 1
    assert loaded["names"] == ["a", "b"]
    assert torch.equal(loaded["state_dict"]["w"], torch.ones(2))
    assert os.listdir(tmp_path) == ["a.ckpt"]  # no temporary file left behind


def test_saving_an_object_names_where_it_is(tmp_path):
    with pytest.raises(
        TypeError, match=r"checkpoint\['hyper_parameters'\]\['net'\] holds a Linear"
    ):
        save_checkpoint({"hyper_parameters": {"net": torch.nn.Linear(1, 1)}}, tmp_path / "b.ckpt")
    assert not (tmp_path / "b.ckpt").exists()
    assert os.listdir(tmp_path) == []


def test_pickled_object_is_refused_without_running_it(tmp_path):
    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "payload": _Payload()}, path)
    with pytest.raises(UnsafeCheckpointError, match="not a safe ltrain checkpoint"):
        load_checkpoint(path)


def test_failed_write_keeps_the_previous_file(tmp_path):
    path = tmp_path / "c.ckpt"
    save_checkpoint({"state_dict": {}, "epoch": 0}, path)
    with pytest.raises(TypeError):
        save_checkpoint({"state_dict": {}, "epoch": object()}, path)
    assert load_checkpoint(path)["epoch"] == 0
    assert os.listdir(tmp_path) == ["c.ckpt"]


def test_missing_file_and_non_checkpoint_have_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such checkpoint file"):
        load_checkpoint(tmp_path / "nope.ckpt")
    torch.save({"weights": torch.ones(1)}, tmp_path / "plain.pt")
    with pytest.raises(UnsafeCheckpointError, match="no 'state_dict'"):
        load_checkpoint(tmp_path / "plain.pt")


class _CreatesFile:
    target = ""

    def __reduce__(self):
        return (open, (self.target, "w"))


def test_pickle_that_would_create_a_file_is_refused_and_the_file_never_appears(tmp_path):
    payload = _CreatesFile()
    payload.target = str(tmp_path / "created-by-unpickling")
    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "payload": payload}, path)
    with pytest.raises(UnsafeCheckpointError, match="not a safe ltrain checkpoint"):
        load_checkpoint(path)
    assert not (tmp_path / "created-by-unpickling").exists()


def test_nan_loss_stops_naming_the_step_and_keeps_the_last_good_checkpoint(tmp_path):
    from boring import BoringModel, boring_loader, quiet_trainer

    from ltrain.callbacks import ModelCheckpoint
    from ltrain.errors import NonFiniteLossError

    class Diverges(BoringModel):
        def training_step(self, batch, batch_idx):
            loss = super().training_step(batch, batch_idx)
            return loss * float("nan") if self.global_step == 5 else loss

    checkpoint = ModelCheckpoint(save_last=True, every_n_train_steps=2)
    trainer = quiet_trainer(tmp_path, max_epochs=2, callbacks=[checkpoint], log_every_n_steps=50)
    with pytest.raises(NonFiniteLossError, match=r"global step 5 \(epoch 0, batch 5\)"):
        trainer.fit(Diverges(), boring_loader(samples=64, batch_size=8))
    last = torch.load(checkpoint.last_model_path, weights_only=True)
    assert last["global_step"] == 4
    assert all(torch.isfinite(v).all() for v in last["state_dict"].values())
