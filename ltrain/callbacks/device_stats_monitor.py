"""`DeviceStatsMonitor`: the device's statistics at each training, validation and test batch's
start and end, logged as `DeviceStatsMonitor.on_train_batch_start/<stat>` and so on.

On a GPU the stats are `torch.cuda.memory_stats`; on the CPU they are psutil's memory, CPU and
swap percentages (`cpu_vm_percent`, `cpu_percent`, `cpu_swap_percent`). `cpu_stats=False` logs
nothing on the CPU; `cpu_stats=True` adds the CPU's stats to a GPU's. Rows follow
`log_every_n_steps`, as in Lightning.
"""

from __future__ import annotations

import importlib.util
from typing import TYPE_CHECKING, Any

import torch

from ltrain.callbacks.base import Callback
from ltrain.errors import MisconfigurationException
from ltrain.trainer.log_rows import row_due

if TYPE_CHECKING:
    from ltrain.module import Module
    from ltrain.trainer.trainer import Trainer


def get_cpu_stats() -> dict[str, float]:
    """psutil's memory, CPU and swap use, in percent."""
    try:
        import psutil
    except ImportError:
        raise ModuleNotFoundError(
            "CPU stats need psutil: `pip install psutil`, or set DeviceStatsMonitor(cpu_stats=False)."
        ) from None
    return {
        "cpu_vm_percent": psutil.virtual_memory().percent,
        "cpu_percent": psutil.cpu_percent(),
        "cpu_swap_percent": psutil.swap_memory().percent,
    }


class DeviceStatsMonitor(Callback):
    """`cpu_stats`: None logs the CPU's stats only when training on the CPU; True adds them to a
    GPU's; False never logs them."""

    def __init__(self, cpu_stats: bool | None = None) -> None:
        self._cpu_stats = cpu_stats

    def setup(self, trainer: Trainer, pl_module: Module, stage: str) -> None:
        if stage != "fit":
            return
        if not trainer.loggers:
            raise MisconfigurationException(
                "Cannot use `DeviceStatsMonitor` callback with `Trainer(logger=False)`."
            )
        on_cpu = trainer.strategy.root_device.type == "cpu"
        if self._cpu_stats is None and on_cpu and importlib.util.find_spec("psutil") is None:
            raise ModuleNotFoundError(
                "`DeviceStatsMonitor` cannot log CPU stats as `psutil` is not installed: "
                "`pip install psutil`, or pass cpu_stats=False."
            )

    def _log_stats(self, trainer: Trainer, hook: str, due: bool) -> None:
        device = trainer.strategy.root_device
        if not due or (self._cpu_stats is False and device.type == "cpu"):
            return
        if device.type == "cuda":
            stats: dict[str, Any] = dict(torch.cuda.memory_stats(device))
            if self._cpu_stats:
                stats.update(get_cpu_stats())
        elif device.type == "cpu":
            stats = get_cpu_stats()
        else:
            stats = {}
        # the row's step is the batches that stepped before this batch (Lightning's count)
        step = trainer._batches_that_stepped
        if trainer.training and hook != "on_train_batch_start":
            step -= trainer._position.stepped
        prefix = f"{type(self).__qualname__}.{hook}"
        for logger in trainer._writing_loggers:
            separator = getattr(logger, "group_separator", "/")
            logger.log_metrics({f"{prefix}{separator}{k}": v for k, v in stats.items()}, step)

    def _train_due(self, trainer: Trainer, hook: str) -> bool:
        before = trainer._batches_that_stepped
        if hook == "on_train_batch_end":
            before -= trainer._position.stepped
        return row_due(trainer, before + 1)

    def on_train_batch_start(
        self, trainer: Trainer, pl_module: Module, batch: Any, batch_idx: int
    ) -> None:
        self._log_stats(
            trainer, "on_train_batch_start", self._train_due(trainer, "on_train_batch_start")
        )

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: Module, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        self._log_stats(
            trainer, "on_train_batch_end", self._train_due(trainer, "on_train_batch_end")
        )

    def _evaluation_due(self, trainer: Trainer, batch_idx: int, dataloader_idx: int) -> bool:
        """Lightning counts an evaluation's batches over all its loaders."""
        counts = trainer.num_val_batches if trainer.validating or trainer.training else []
        if trainer.testing:
            counts = trainer.num_test_batches
        if trainer.sanity_checking:
            counts = [min(c, trainer.num_sanity_val_steps) for c in counts]
        return row_due(trainer, int(sum(counts[:dataloader_idx])) + batch_idx + 1)

    def on_validation_batch_start(
        self,
        trainer: Trainer,
        pl_module: Module,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        due = self._evaluation_due(trainer, batch_idx, dataloader_idx)
        self._log_stats(trainer, "on_validation_batch_start", due)

    def on_validation_batch_end(
        self,
        trainer: Trainer,
        pl_module: Module,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        due = self._evaluation_due(trainer, batch_idx, dataloader_idx)
        self._log_stats(trainer, "on_validation_batch_end", due)

    def on_test_batch_start(
        self,
        trainer: Trainer,
        pl_module: Module,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        due = self._evaluation_due(trainer, batch_idx, dataloader_idx)
        self._log_stats(trainer, "on_test_batch_start", due)

    def on_test_batch_end(
        self,
        trainer: Trainer,
        pl_module: Module,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        due = self._evaluation_due(trainer, batch_idx, dataloader_idx)
        self._log_stats(trainer, "on_test_batch_end", due)
