"""A tiny model and data set that make most tests run in milliseconds on the CPU."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch.nn import functional as F

import ltrain as pl
from ltrain.data import TensorLoader

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def random_regression(
    samples: int = 64, features: int = 4, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(samples, features, generator=generator)
    y = x.sum(dim=1, keepdim=True)
    return x, y


def boring_loader(
    samples: int = 64, batch_size: int = 8, features: int = 4, shuffle: bool = False
) -> TensorLoader:
    return TensorLoader(
        *random_regression(samples, features), batch_size=batch_size, shuffle=shuffle
    )


class BoringModel(pl.LightningModule):
    """A linear layer on random data; logs `train_loss` per step and `valid_loss` per epoch."""

    def __init__(self, features: int = 4, lr: float = 0.1) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(features, 1)
        self.lr = lr

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = F.mse_loss(self(x), y)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        self.log("valid_loss", F.mse_loss(self(x), y))

    def test_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        self.log("test_loss", F.mse_loss(self(x), y))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=self.lr)


def quiet_trainer(tmp_path: Any, **kwargs: Any) -> pl.Trainer:
    """A Trainer writing under tmp_path, without bar or summary, unless kwargs say otherwise."""
    options = {
        "default_root_dir": tmp_path,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "accelerator": "cpu",
    }
    options.update(kwargs)
    return pl.Trainer(**options)


def digits_config(
    name: str = "tiny", lr: float = 0.01, batch_size: int = 64, **trainer: Any
) -> dict:
    """A fresh small config for CLI tests: MLPClassifier on Digits, quiet, a few batches.

    `trainer` entries are added to (or replace) the trainer section.
    """
    return {
        "name": name,
        "seed": 0,
        "model": {"class_path": "MLPClassifier", "init_args": {"in_features": 64, "lr": lr}},
        "data": {"class_path": "Digits", "init_args": {"batch_size": batch_size}},
        "trainer": {
            "max_epochs": 1,
            "limit_train_batches": 2,
            "limit_val_batches": 1,
            "log_every_n_steps": 1,
            "enable_progress_bar": False,
            "enable_model_summary": False,
            **trainer,
        },
    }


def fit_briefly(
    tmp_path: Any, model: pl.LightningModule, epochs: int = 2, **kwargs: Any
) -> pl.Trainer:
    """Fit `model` for a few epochs on 32 training and 16 validation samples, writing nothing."""
    trainer = quiet_trainer(
        tmp_path, max_epochs=epochs, logger=False, enable_checkpointing=False, **kwargs
    )
    trainer.fit(model, boring_loader(32, 8), boring_loader(16, 8))
    return trainer
