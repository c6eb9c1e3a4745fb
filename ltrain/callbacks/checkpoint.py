"""`Checkpoint`, the base class of callbacks that save checkpoints, and `OnExceptionCheckpoint`."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from ltrain.callbacks.base import Callback

if TYPE_CHECKING:
    from ltrain.module import Module
    from ltrain.trainer.trainer import Trainer


class Checkpoint(Callback):
    """A callback that saves checkpoints: one of these in `callbacks` replaces the default
    ModelCheckpoint, and `enable_checkpointing=False` refuses it, as in Lightning."""


class OnExceptionCheckpoint(Checkpoint):
    """Save `<dirpath>/<filename>.ckpt` when a run ends with an exception (Ctrl-C included),
    so it can be resumed with `ckpt_path`; a run that ends well removes a stale one."""

    FILE_EXTENSION = ".ckpt"

    def __init__(self, dirpath: str | os.PathLike, filename: str = "on_exception") -> None:
        if not filename:
            raise ValueError("The filename cannot be empty")
        # set now, not in setup: the exception may come before any hook runs
        self.dirpath = dirpath
        self.filename = filename

    @property
    def ckpt_path(self) -> str:
        return os.path.join(self.dirpath, self.filename + self.FILE_EXTENSION)

    def on_exception(self, trainer: Trainer, pl_module: Module, exception: BaseException) -> None:
        trainer.save_checkpoint(self.ckpt_path)

    def teardown(self, trainer: Trainer, pl_module: Module, stage: str) -> None:
        if trainer.is_global_zero and os.path.isfile(self.ckpt_path):
            os.remove(self.ckpt_path)
