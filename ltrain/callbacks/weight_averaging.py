"""`WeightAveraging` and `EMAWeightAveraging`: an `AveragedModel` kept beside the module.

After each optimizer step (or epoch, as `should_update` decides) the average takes in the
module's weights; validation runs on the average (swapped in, then back), and when training
ends the module keeps it. A checkpoint holds the average as its `state_dict`, the module's own
weights as `current_model_state` and the averaging counters as `averaging_state`, as Lightning's.
"""

from __future__ import annotations

import itertools
import warnings
from copy import deepcopy
from typing import TYPE_CHECKING, Any

import torch
from torch.optim.swa_utils import AveragedModel, get_ema_avg_fn

from ltrain.callbacks.base import Callback
from ltrain.console import info

if TYPE_CHECKING:
    from ltrain.module import Module
    from ltrain.trainer.trainer import Trainer


class WeightAveraging(Callback):
    """Keyword arguments other than `device` and `use_buffers` go to `AveragedModel` (`avg_fn`,
    `multi_avg_fn`); without them the average is the plain mean (SWA). `use_buffers=True`
    averages the buffers (BatchNorm statistics) too."""

    def __init__(
        self,
        device: torch.device | str | int | None = None,
        use_buffers: bool = True,
        **kwargs: Any,
    ) -> None:
        self._device = torch.device(device) if isinstance(device, str) else device
        self._use_buffers = use_buffers
        self._kwargs = kwargs
        self._average_model: AveragedModel | None = None
        self._latest_update_step = 0
        self._latest_update_epoch = -1

    def should_update(self, step_idx: int | None = None, epoch_idx: int | None = None) -> bool:
        """Whether to update the average after optimizer step `step_idx` or epoch `epoch_idx`
        (0-based; the other is None). By default after every step."""
        return step_idx is not None

    def setup(self, trainer: Trainer, pl_module: Module, stage: str) -> None:
        if stage != "fit":
            return
        from ltrain.module import Module
        from ltrain.trainer.hooks import overrides

        if overrides(pl_module, "configure_model", Module):
            warnings.warn(
                "WeightAveraging does not shard the layers configure_model makes; the average "
                "holds a whole copy of them, which may run out of memory.",
                stacklevel=2,
            )
            pl_module.configure_model()
        self._average_model = AveragedModel(
            pl_module,
            device=self._device or pl_module.device,
            use_buffers=self._use_buffers,
            **self._kwargs,
        )

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: Module, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        step = trainer.global_step
        if step > self._latest_update_step and self.should_update(step_idx=step - 1):
            assert self._average_model is not None
            self._average_model.update_parameters(pl_module)
            self._latest_update_step = step

    def on_train_epoch_end(self, trainer: Trainer, pl_module: Module) -> None:
        epoch = trainer.current_epoch
        if epoch > self._latest_update_epoch and self.should_update(epoch_idx=epoch):
            assert self._average_model is not None
            self._average_model.update_parameters(pl_module)
            self._latest_update_epoch = epoch

    def on_train_end(self, trainer: Trainer, pl_module: Module) -> None:
        for average, current in self._pairs(pl_module):
            current.data.copy_(average.data)

    def on_validation_epoch_start(self, trainer: Trainer, pl_module: Module) -> None:
        if self._average_model is not None:
            self._swap(pl_module)

    def on_validation_epoch_end(self, trainer: Trainer, pl_module: Module) -> None:
        if self._average_model is not None:
            self._swap(pl_module)

    def state_dict(self) -> dict[str, Any]:
        return {"latest_update_step": self._latest_update_step}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._latest_update_step = state_dict["latest_update_step"]

    def on_save_checkpoint(
        self, trainer: Trainer, pl_module: Module, checkpoint: dict[str, Any]
    ) -> None:
        if self._average_model is None:
            info(
                "WeightAveraging: a checkpoint saved outside fit holds no averaging state; after "
                "training its state_dict is the average."
            )
            return
        state = self._average_model.state_dict()
        checkpoint["current_model_state"] = checkpoint["state_dict"]
        checkpoint["state_dict"] = {
            name.removeprefix("module."): value
            for name, value in state.items()
            if name.startswith("module.")
        }
        checkpoint["averaging_state"] = {
            name: value for name, value in state.items() if not name.startswith("module.")
        }

    def on_load_checkpoint(
        self, trainer: Trainer, pl_module: Module, checkpoint: dict[str, Any]
    ) -> None:
        if self._average_model is None:
            warnings.warn(
                "WeightAveraging: loading a checkpoint outside fit does not restore the "
                "averaging state; remove the callback to silence this.",
                stacklevel=2,
            )
        elif "current_model_state" in checkpoint and "averaging_state" in checkpoint:
            info("Found current_model_state in the checkpoint: it initializes the model.")
            state = {"module." + name: value for name, value in checkpoint["state_dict"].items()}
            self._average_model.load_state_dict(state | checkpoint["averaging_state"])
            pl_module.load_state_dict(checkpoint["current_model_state"])
        else:
            warnings.warn(
                "The checkpoint was not made with WeightAveraging: the model and its average both "
                "start from its state_dict.",
                stacklevel=2,
            )
            self._average_model.module.load_state_dict(
                deepcopy(checkpoint["state_dict"]), strict=False
            )

    def _pairs(self, pl_module: Module) -> Any:
        """(average, current) for every parameter and buffer, in the same order."""
        assert self._average_model is not None
        average = self._average_model.module
        return zip(
            itertools.chain(average.parameters(), average.buffers()),
            itertools.chain(pl_module.parameters(), pl_module.buffers()),
            strict=False,
        )

    def _swap(self, pl_module: Module) -> None:
        for average, current in self._pairs(pl_module):
            kept = average.data.clone()
            average.data.copy_(current.data)
            current.data.copy_(kept)


class EMAWeightAveraging(WeightAveraging):
    """An exponential moving average: `average = decay * average + (1 - decay) * weights`, after
    every `update_every_n_steps`-th step from `update_starting_at_step` on, and after each epoch
    from `update_starting_at_epoch` on (when given)."""

    def __init__(
        self,
        device: torch.device | str | int | None = None,
        use_buffers: bool = True,
        decay: float = 0.999,
        update_every_n_steps: int = 1,
        update_starting_at_step: int | None = None,
        update_starting_at_epoch: int | None = None,
        **kwargs: Any,
    ) -> None:
        kwargs["avg_fn"] = get_ema_avg_fn(decay=decay)
        super().__init__(device=device, use_buffers=use_buffers, **kwargs)
        self.update_every_n_steps = update_every_n_steps
        self.update_starting_at_step = update_starting_at_step
        self.update_starting_at_epoch = update_starting_at_epoch

    def should_update(self, step_idx: int | None = None, epoch_idx: int | None = None) -> bool:
        if step_idx is not None:
            started = (
                self.update_starting_at_step is None or step_idx >= self.update_starting_at_step
            )
            every = self.update_every_n_steps
            if started and every > 0 and step_idx % every == 0:
                return True
        start_epoch = self.update_starting_at_epoch
        return epoch_idx is not None and start_epoch is not None and epoch_idx >= start_epoch
