"""`GradientAccumulationScheduler`: how many batches make one optimizer step, epoch by epoch."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ltrain.callbacks.base import Callback
from ltrain.errors import MisconfigurationException

if TYPE_CHECKING:
    from ltrain.module import Module
    from ltrain.trainer.trainer import Trainer


class GradientAccumulationScheduler(Callback):
    """`scheduling={epoch: factor}`: from that epoch (0-based) on, accumulate `factor` batches;
    before the first epoch given, 1. Sets `trainer.accumulate_grad_batches` at each epoch start."""

    def __init__(self, scheduling: dict[int, int]) -> None:
        if not scheduling:
            raise TypeError("Empty dict cannot be interpreted correct")
        if any(not isinstance(epoch, int) or epoch < 0 for epoch in scheduling):
            raise MisconfigurationException(
                f"Epoch should be an int greater than or equal to 0. Got {list(scheduling)}."
            )
        if any(not isinstance(factor, int) or factor < 1 for factor in scheduling.values()):
            raise MisconfigurationException(
                "Accumulation factor should be an int greater than 0. "
                f"Got {list(scheduling.values())}."
            )
        self.scheduling = {0: 1, **scheduling}
        self.epochs = sorted(self.scheduling)

    def going_to_accumulate_grad_batches(self) -> bool:
        return any(factor > 1 for factor in self.scheduling.values())

    def get_accumulate_grad_batches(self, epoch: int) -> int:
        return self.scheduling[max(e for e in self.epochs if e <= epoch)]

    def on_train_start(self, trainer: Trainer, pl_module: Module) -> None:
        """Refuse what the schedule cannot work with, before the first batch."""
        if not pl_module.automatic_optimization and self.going_to_accumulate_grad_batches():
            raise RuntimeError(
                "Automatic gradient accumulation and the `GradientAccumulationScheduler` is not "
                "supported for manual optimization. Please remove the callback or switch to "
                "automatic optimization."
            )
        if trainer.accumulate_grad_batches != 1:
            raise ValueError(
                "You have set `accumulate_grad_batches` and are using the "
                "`GradientAccumulationScheduler` callback. Either remove `accumulate_grad_batches` "
                "from the Trainer or remove the callback."
            )

    def on_train_epoch_start(self, trainer: Trainer, pl_module: Module) -> None:
        trainer.accumulate_grad_batches = self.get_accumulate_grad_batches(trainer.current_epoch)
