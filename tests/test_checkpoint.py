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
