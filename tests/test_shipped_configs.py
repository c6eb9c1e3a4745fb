"""Every config in configs/ validates and trains through `ltrain fit` on tiny data written here."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest
import torch
from click.testing import CliRunner
from test_data import write_cifar_batches, write_idx

from ltrain.app.cli import main

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
TINY_TRAINER = [
    "--set",
    "trainer.max_epochs=1",
    "--set",
    "trainer.limit_train_batches=2",
    "--set",
    "trainer.limit_val_batches=1",
    "--set",
    "trainer.enable_progress_bar=false",
]


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    shutil.copytree(CONFIGS, tmp_path / "configs")
    return tmp_path


def write_tiny_mnist(root: Path) -> None:
    generator = torch.Generator().manual_seed(0)
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for prefix, n in (("train", 64), ("t10k", 16)):
        images = torch.randint(0, 256, (n, 28, 28), generator=generator, dtype=torch.uint8)
        labels = torch.randint(0, 10, (n,), generator=generator, dtype=torch.uint8)
        write_idx(raw, prefix, images, labels)


def fit(config: str, *extra: str):
    result = CliRunner().invoke(main, ["fit", f"configs/{config}", *TINY_TRAINER, *extra])
    assert result.exit_code == 0, result.output + (result.stderr or "")
    return result


@pytest.mark.parametrize("config", sorted(p.name for p in CONFIGS.glob("*.yaml")))
def test_every_shipped_config_resolves(workdir, config):
    result = CliRunner().invoke(main, ["config", f"configs/{config}"])
    assert result.exit_code == 0, result.stderr


@pytest.mark.parametrize("config", ["mnist.yaml", "mnist_cnn.yaml"])
def test_mnist_configs_train_on_tiny_idx_files(workdir, config):
    write_tiny_mnist(workdir / "data")
    fit(config, "--set", "data.val_split=16", "--set", "data.batch_size=16")
    name = "mnist-mlp" if config == "mnist.yaml" else "mnist-cnn"
    metrics = pd.read_csv(workdir / "runs" / name / "version_0" / "metrics.csv")
    assert metrics["valid_loss"].notna().sum() == 1


def test_cifar10_config_builds_its_nested_torchvision_backbone(workdir):
    write_cifar_batches(workdir / "data" / "cifar-10-batches-bin", per_file=4)
    fit("cifar10_resnet.yaml", "--set", "data.val_split=4", "--set", "data.batch_size=4")
    folder = workdir / "runs" / "cifar10-resnet18" / "version_0"
    state = torch.load(folder / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    assert state["model.fc.weight"].shape == (10, 512)


def test_mnist_config_without_files_is_one_line_and_leaves_no_folder(workdir):
    result = CliRunner().invoke(main, ["fit", "configs/mnist.yaml"])
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1
    assert "data/MNIST/raw must hold train-images-idx3-ubyte" in result.stderr
    assert not any((workdir / "runs").glob("*/version_*"))
