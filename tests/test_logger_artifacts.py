"""What loggers do with checkpoints and models: `log_model` uploads, `after_save_checkpoint`,
TensorBoard's `log_graph`, and W&B's media, tables and `watch`.

Everything is read back from where users find it: the W&B offline run file, the MLflow file
store, TensorBoard's event file. Where Lightning is installed, the same user code runs through
`lightning.pytorch` and ltrain and what each left behind is compared.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import torch
from boring import BoringModel, boring_loader, quiet_trainer
from parity.observe import kit, loader, regression, trainer

import ltrain as pl
from ltrain.callbacks import ModelCheckpoint


def fit(root: Path, loggers: Any, model: Any = None, **checkpointing: Any) -> pl.Trainer:
    """Two epochs of 4 batches; a ModelCheckpoint keeping the best `valid_loss` and last.ckpt."""
    torch.manual_seed(0)
    options = {"monitor": "valid_loss", "save_last": True, **checkpointing}
    run = quiet_trainer(
        root,
        logger=loggers,
        max_epochs=2,
        callbacks=[ModelCheckpoint(dirpath=root / "ckpt", **options)],
    )
    run.fit(model or BoringModel(), boring_loader(16, 4), boring_loader(8, 4))
    return run


# ---------------------------------------------------------------------- after_save_checkpoint


def recording_logger(framework: Any) -> Any:
    """A logger of `framework` that lists the checkpoint folder whenever a checkpoint is saved."""

    class Recording(framework.loggers.Logger):
        def __init__(self) -> None:
            super().__init__()
            self.calls: list[tuple[str, list[str]]] = []

        @property
        def name(self) -> str:
            return "recording"

        @property
        def version(self) -> int:
            return 0

        def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
            pass

        def log_metrics(self, metrics: Any, step: Any = None) -> None:
            pass

        def after_save_checkpoint(self, checkpoint_callback: Any) -> None:
            folder = checkpoint_callback.dirpath
            saved = Path(checkpoint_callback._last_checkpoint_saved).name
            self.calls.append((saved, sorted(os.listdir(folder))))

    return Recording()


def checkpoint_saves(framework: Any, root: Path) -> list[tuple[str, list[str]]]:
    framework.seed_everything(0)
    loggers = [recording_logger(framework), recording_logger(framework)]
    callback = framework.callbacks.ModelCheckpoint(
        dirpath=root / "ckpt", monitor="valid_loss", save_last=True
    )
    run = trainer(framework, root, logger=loggers, callbacks=[callback], max_epochs=2)
    run.fit(kit(framework).Regressor(), loader(regression()), loader(regression(32, seed=2)))
    assert loggers[0].calls == loggers[1].calls  # every logger hears of every file
    return loggers[0].calls


def test_every_logger_hears_of_each_checkpoint_file_right_after_it_is_written(tmp_path):
    assert checkpoint_saves(pl, tmp_path) == [
        ("epoch=0-step=8.ckpt", ["epoch=0-step=8.ckpt"]),
        ("last.ckpt", ["epoch=0-step=8.ckpt", "last.ckpt"]),
        # the new best file is announced before the old one is deleted
        ("epoch=1-step=16.ckpt", ["epoch=0-step=8.ckpt", "epoch=1-step=16.ckpt", "last.ckpt"]),
        ("last.ckpt", ["epoch=1-step=16.ckpt", "last.ckpt"]),
    ]


def test_after_save_checkpoint_calls_match_lightnings(tmp_path):
    lightning = pytest.importorskip("lightning.pytorch")
    assert checkpoint_saves(pl, tmp_path / "ours") == checkpoint_saves(
        lightning, tmp_path / "lightning"
    )


def test_the_base_logger_ignores_checkpoints():
    logger = pl.loggers.Logger()
    logger.after_save_checkpoint(ModelCheckpoint())
