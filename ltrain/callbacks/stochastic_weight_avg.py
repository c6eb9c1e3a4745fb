"""`StochasticWeightAveraging`: average the weights of the last epochs, on `torch.optim.swa_utils`.

Lightning's schedule, epochs counted from 0: from epoch `swa_start` (`swa_epoch_start`, an epoch
number counted from 1 or a fraction of `max_epochs`) to the last, the weights as each epoch
starts are added to a running average, and an `SWALR` schedule replaces the module's scheduler.
When training ends the module gets the average. A module with BatchNorm layers trains one more
epoch, forward passes only, to recompute their running statistics for the averaged weights.
"""

from __future__ import annotations

from collections.abc import Callable
from copy import deepcopy
from typing import TYPE_CHECKING, Any, Literal, cast

import torch
from torch import nn
from torch.optim.swa_utils import SWALR

from ltrain.callbacks.base import Callback
from ltrain.console import info
from ltrain.errors import MisconfigurationException

if TYPE_CHECKING:
    from ltrain.module import Module
    from ltrain.trainer.trainer import Trainer

_CPU = torch.device("cpu")
AverageFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


class StochasticWeightAveraging(Callback):
    """`swa_lrs`: the learning rate SWALR anneals to (one, or one per parameter group)."""

    def __init__(
        self,
        swa_lrs: float | list[float],
        swa_epoch_start: int | float = 0.8,
        annealing_epochs: int = 10,
        annealing_strategy: Literal["cos", "linear"] = "cos",
        avg_fn: AverageFn | None = None,
        device: torch.device | str | None = _CPU,
    ) -> None:
        start_ok = (
            swa_epoch_start >= 1 if isinstance(swa_epoch_start, int) else 0 <= swa_epoch_start <= 1
        )
        if not start_ok:
            raise MisconfigurationException(
                "swa_epoch_start should be a >0 integer or a float between 0 and 1."
            )
        lrs = swa_lrs if isinstance(swa_lrs, list) else [swa_lrs]
        if not isinstance(swa_lrs, (float, list)) or not all(
            isinstance(lr, float) and lr > 0 for lr in lrs
        ):
            raise MisconfigurationException(
                "The `swa_lrs` should a positive float, or a list of positive floats"
            )
        if annealing_strategy not in ("cos", "linear"):
            raise MisconfigurationException(
                f"annealing_strategy should be 'cos' or 'linear', got {annealing_strategy!r}."
            )
        if avg_fn is not None and not callable(avg_fn):
            raise MisconfigurationException("The `avg_fn` should be callable.")
        if device is not None and not isinstance(device, (torch.device, str)):
            raise MisconfigurationException(
                f"device is expected to be a torch.device or a str. Found {device}"
            )
        self._swa_epoch_start = swa_epoch_start
        self._swa_lrs = swa_lrs
        self._annealing_epochs = annealing_epochs
        self._annealing_strategy = annealing_strategy
        self._avg_fn = avg_fn or self.avg_fn
        self._device = device
        self.n_averaged: torch.Tensor | None = None
        self._average_model: Module | None = None
        self._swa_scheduler: Any = None
        self._scheduler_state: dict[str, Any] | None = None
        self._initialized = False
        self._init_n_averaged = 0
        self._latest_update_epoch = -1
        self._has_batch_norm = False
        self._max_epochs = -1
        self._accumulate_grad_batches = 1
        self.momenta: dict[nn.modules.batchnorm._BatchNorm, float | None] = {}

    @property
    def swa_start(self) -> int:
        """The first averaged epoch, counted from 0."""
        return max(int(self._swa_epoch_start) - 1, 0)

    @property
    def swa_end(self) -> int | float:
        """The last averaged epoch, counted from 0 (no end without `max_epochs`)."""
        return float("inf") if self._max_epochs == -1 else self._max_epochs - 1

    @staticmethod
    def pl_module_contains_batch_norm(pl_module: Module) -> bool:
        return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in pl_module.modules())

    @staticmethod
    def avg_fn(average: torch.Tensor, parameter: torch.Tensor, n_averaged: torch.Tensor) -> Any:
        """The running mean: the average moved toward `parameter` by 1 / (n + 1)."""
        return average + (parameter - average) / (n_averaged + 1)

    def setup(self, trainer: Trainer, pl_module: Module, stage: str) -> None:
        self._average_model = deepcopy(pl_module)

    def on_fit_start(self, trainer: Trainer, pl_module: Module) -> None:
        if len(trainer.optimizers) != 1:
            raise MisconfigurationException("SWA currently works with 1 `optimizer`.")
        if len(trainer.lr_scheduler_configs) > 1:
            raise MisconfigurationException(
                "SWA currently not supported for more than 1 `lr_scheduler`."
            )
        if isinstance(self._swa_epoch_start, float):
            if trainer.max_epochs == -1:
                raise MisconfigurationException(
                    "SWA with `swa_epoch_start` as a float is not supported when "
                    "`max_epochs=-1`; give `swa_epoch_start` as an integer."
                )
            self._swa_epoch_start = int(trainer.max_epochs * self._swa_epoch_start)
        self._has_batch_norm = self.pl_module_contains_batch_norm(pl_module)
        self._max_epochs = trainer.max_epochs
        if self._has_batch_norm and trainer.max_epochs != -1:
            trainer.max_epochs += 1  # the epoch that recomputes the BatchNorm statistics
        if self._scheduler_state is not None:  # resumed after averaging began: SWALR comes back
            trainer.lr_scheduler_configs.clear()

    def on_train_epoch_start(self, trainer: Trainer, pl_module: Module) -> None:
        epoch = trainer.current_epoch
        averaging = self.swa_start <= epoch <= self.swa_end
        if averaging and not self._initialized:
            self._start_averaging(trainer, pl_module)
        if averaging and epoch > self._latest_update_epoch:
            assert self._average_model is not None and self.n_averaged is not None
            self.update_parameters(self._average_model, pl_module, self.n_averaged, self._avg_fn)
            self._latest_update_epoch = epoch
        if self._max_epochs != -1 and epoch == self.swa_end + 1:
            assert self._average_model is not None
            self.transfer_weights(self._average_model, pl_module)
            self.reset_batch_norm_and_save_state(pl_module)
            trainer._skip_backward = True
            self._accumulate_grad_batches = trainer.accumulate_grad_batches
            # one optimizer step at the epoch's end, with no gradients: the weights stay
            trainer.accumulate_grad_batches = int(trainer.num_training_batches) + 1

    def _start_averaging(self, trainer: Trainer, pl_module: Module) -> None:
        from ltrain.trainer.optimizers import LRSchedulerConfig  # the trainer imports callbacks

        self._initialized = True
        assert self._average_model is not None
        self._average_model = self._average_model.to(self._device or pl_module.device)
        optimizer = trainer.optimizers[0]
        if isinstance(self._swa_lrs, float):
            self._swa_lrs = [self._swa_lrs] * len(optimizer.param_groups)
        for lr, group in zip(self._swa_lrs, optimizer.param_groups, strict=False):
            group["initial_lr"] = lr
        self._swa_scheduler = SWALR(
            optimizer,
            swa_lr=cast(Any, self._swa_lrs),  # one per group, as SWALR takes them
            anneal_epochs=self._annealing_epochs,
            anneal_strategy=self._annealing_strategy,
            last_epoch=trainer.max_epochs if self._annealing_strategy == "cos" else -1,
        )
        if self._scheduler_state is not None:
            self._swa_scheduler.load_state_dict(self._scheduler_state)
        swa_config = LRSchedulerConfig(self._swa_scheduler)
        if trainer.lr_scheduler_configs:
            replaced = trainer.lr_scheduler_configs[0]
            info(
                f"Swapping scheduler `{type(replaced.scheduler).__name__}` for "
                f"`{type(self._swa_scheduler).__name__}`"
            )
            trainer.lr_scheduler_configs[0] = swa_config
        else:
            trainer.lr_scheduler_configs.append(swa_config)
        if self.n_averaged is None:
            self.n_averaged = torch.tensor(self._init_n_averaged, dtype=torch.long)

    def on_train_epoch_end(self, trainer: Trainer, pl_module: Module) -> None:
        trainer._skip_backward = False

    def on_train_end(self, trainer: Trainer, pl_module: Module) -> None:
        ended = trainer.current_epoch - 1
        if self._has_batch_norm and self._max_epochs != -1 and ended == self.swa_end + 1:
            trainer.accumulate_grad_batches = self._accumulate_grad_batches
            trainer.max_epochs -= 1
            for module, momentum in self.momenta.items():
                module.momentum = momentum
        elif (ended == self.swa_end or self._max_epochs == -1) and self._average_model is not None:
            self.transfer_weights(self._average_model, pl_module)

    @staticmethod
    def transfer_weights(source: Module, destination: Module) -> None:
        for src, dst in zip(source.parameters(), destination.parameters(), strict=True):
            dst.detach().copy_(src.to(dst.device))

    def reset_batch_norm_and_save_state(self, pl_module: Module) -> None:
        """Fresh running statistics, and momentum None (a plain mean over the coming epoch)."""
        self.momenta = {}
        for module in pl_module.modules():
            if not isinstance(module, nn.modules.batchnorm._BatchNorm):
                continue
            if module.running_mean is not None and module.running_var is not None:
                module.running_mean = torch.zeros_like(module.running_mean)
                module.running_var = torch.ones_like(module.running_var)
            self.momenta[module] = module.momentum
            module.momentum = None
            if module.num_batches_tracked is not None:
                module.num_batches_tracked.zero_()

    @staticmethod
    def update_parameters(
        average_model: Module, model: Module, n_averaged: torch.Tensor, avg_fn: AverageFn
    ) -> None:
        """Add the model's weights to the average (the first time, the average is them)."""
        for average, parameter in zip(average_model.parameters(), model.parameters(), strict=True):
            target = average.detach()
            current = parameter.detach().to(target.device)
            first = n_averaged == 0
            target.copy_(
                current if first else avg_fn(target, current, n_averaged.to(target.device))
            )
        n_averaged += 1

    def state_dict(self) -> dict[str, Any]:
        return {
            "n_averaged": 0 if self.n_averaged is None else self.n_averaged.item(),
            "latest_update_epoch": self._latest_update_epoch,
            "scheduler_state": None
            if self._swa_scheduler is None
            else self._swa_scheduler.state_dict(),
            "average_model_state": None
            if self._average_model is None
            else self._average_model.state_dict(),
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._init_n_averaged = state_dict["n_averaged"]
        self._latest_update_epoch = state_dict["latest_update_epoch"]
        self._scheduler_state = state_dict["scheduler_state"]
        if self._average_model is not None:
            self._average_model.load_state_dict(state_dict["average_model_state"])
