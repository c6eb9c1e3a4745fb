"""`TrainerViews`: the Trainer's read-only public attributes, `print` and `init_module`.

These read the state `Trainer.__init__` and the loops keep (the strategy, the loggers, the
callbacks, the module of the run); nothing here changes it. User code and callbacks reach them
as Lightning's names: `trainer.logger`, `trainer.state`, `trainer.num_devices`, ...
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, cast

import torch
from torch.overrides import TorchFunctionMode

from ltrain.accelerators import Accelerator, accelerator_for
from ltrain.callbacks.base import Callback
from ltrain.callbacks.checkpoint import Checkpoint
from ltrain.callbacks.progress import ProgressBar
from ltrain.loggers.base import Logger
from ltrain.module import Module
from ltrain.precision import Precision
from ltrain.trainer.loaders import load_train_loader
from ltrain.trainer.states import TrainerState, TrainerStatus

if TYPE_CHECKING:
    from ltrain.strategies import DDPStrategy, SingleDeviceStrategy
    from ltrain.trainer.trainer import Trainer


class TrainerViews:
    """Read-only views of a Trainer's state (mixed into `Trainer`)."""

    strategy: SingleDeviceStrategy | DDPStrategy
    precision_plugin: Precision
    loggers: list[Logger]
    callbacks: list[Callback]
    default_root_dir: str
    state: TrainerState
    max_epochs: int
    max_steps: int
    accumulate_grad_batches: int
    num_training_batches: int | float
    _ckpt_path: str | None
    _lightning_module: Module | None

    @property
    def logger(self) -> Logger | None:
        return self.loggers[0] if self.loggers else None

    @property
    def _writing_loggers(self) -> list[Logger]:
        """The loggers that write files: all of them on rank 0, none on the other ranks."""
        return self.loggers if self.is_global_zero else []

    @property
    def log_dir(self) -> str:
        if not self.loggers:
            return self.default_root_dir
        return self.loggers[0].log_dir or self.default_root_dir

    @property
    def ckpt_path(self) -> str | None:
        """The checkpoint the latest fit/validate/test/predict loaded (Lightning's name)."""
        return self._ckpt_path

    @property
    def lightning_module(self) -> Module:
        """The module of the current or latest run; None before any (typed as Lightning types it:
        the loops and hooks that read it run only once a module is attached)."""
        return cast(Module, self._lightning_module)

    @property
    def model(self) -> Module | None:
        return self._lightning_module

    @property
    def checkpoint_callbacks(self) -> list[Checkpoint]:
        return [c for c in self.callbacks if isinstance(c, Checkpoint)]

    @property
    def checkpoint_callback(self) -> Checkpoint | None:
        found = self.checkpoint_callbacks
        return found[0] if found else None

    @property
    def early_stopping_callback(self) -> Callback | None:
        from ltrain.callbacks.early_stopping import EarlyStopping

        return next((c for c in self.callbacks if isinstance(c, EarlyStopping)), None)

    @property
    def progress_bar_callback(self) -> ProgressBar | None:
        return next((c for c in self.callbacks if isinstance(c, ProgressBar)), None)

    @property
    def is_global_zero(self) -> bool:
        return self.strategy.is_global_zero

    @property
    def global_rank(self) -> int:
        return self.strategy.global_rank

    @property
    def local_rank(self) -> int:
        return self.strategy.local_rank

    @property
    def world_size(self) -> int:
        return self.strategy.world_size

    @property
    def device(self) -> torch.device:
        return self.strategy.root_device

    @property
    def precision(self) -> str:
        """Lightning's name: '32-true', 'bf16-mixed', ...; the object is `precision_plugin`."""
        return self.precision_plugin.name

    @property
    def estimated_stepping_batches(self) -> int | float:
        """Optimizer steps the whole fit will take (for schedulers such as OneCycleLR)."""
        load_train_loader(
            cast("Trainer", self)
        )  # asked for in configure_optimizers: before the loop asks
        if self.max_epochs == -1:
            return math.inf if self.max_steps == -1 else self.max_steps
        if self.num_training_batches == math.inf:
            return self.max_steps
        per_epoch = math.ceil(self.num_training_batches / self.accumulate_grad_batches)
        steps = per_epoch * max(self.max_epochs, 1)
        return steps if self.max_steps == -1 else min(steps, self.max_steps)

    @property
    def interrupted(self) -> bool:
        """Whether the latest run ended early (an exception or an interrupt), as in Lightning."""
        return self.state.status == TrainerStatus.INTERRUPTED

    @property
    def node_rank(self) -> int:
        return self.strategy.node_rank

    @property
    def device_ids(self) -> list[int]:
        """This node's device indices (Lightning's: [0, 1] for two CPU processes)."""
        if self.strategy.distributed:
            indices = cast("DDPStrategy", self.strategy).device_indices
            return indices if self.device.type == "cuda" else list(range(len(indices)))
        return [self.device.index or 0]

    @property
    def num_devices(self) -> int:
        return len(self.device_ids)

    @property
    def accelerator(self) -> Accelerator:
        """CPUAccelerator, CUDAAccelerator or MPSAccelerator (Lightning's classes' names)."""
        return accelerator_for(self.device)

    def print(self, *args: Any, **kwargs: Any) -> None:
        """`print`, on the global-zero process only (Lightning's `trainer.print`)."""
        if self.is_global_zero:
            print(*args, **kwargs)

    @contextlib.contextmanager
    def init_module(self, empty_init: bool | None = None) -> Iterator[None]:
        """Create the module's parameters on the run's device, in a '-true' precision's dtype;
        `empty_init=True` skips `torch.nn.init` (for weights a checkpoint will replace)."""
        with contextlib.ExitStack() as stack:
            if self.device.type != "cpu":
                stack.enter_context(self.device)
            stack.enter_context(self.precision_plugin.module_init_context())
            if empty_init:
                stack.enter_context(_SkipInit())
            yield


class _SkipInit(TorchFunctionMode):
    """Turns the `torch.nn.init` functions into no-ops: tensors keep their allocated values."""

    def __torch_function__(
        self, func: Callable, types: Any, args: tuple = (), kwargs: dict | None = None
    ) -> Any:
        if getattr(func, "__module__", None) == "torch.nn.init":
            return args[0] if args else (kwargs or {}).get("tensor")
        return func(*args, **(kwargs or {}))
