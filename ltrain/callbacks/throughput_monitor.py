"""`ThroughputMonitor`: batches, samples (and items, FLOPs) per second, logged with Lightning's
names: `train/time`, `train/batches`, `train/samples`, `train/device/batches_per_sec`,
`train/device/samples_per_sec`, ... (`validate/`, `test/`, `predict/` likewise).

The rates are averages over the last `window_size` updates (100 by default), so they appear once
that many batches were seen; totals appear from the first logged batch. Training rows follow
`log_every_n_steps` like the loop's own; time spent validating is not counted as training time.
With several processes the global rates (without `device/`) are logged too. FLOPs come from the
module's `flops_per_batch` attribute; MFU needs `available_flops` (FLOPs per second of one device).
"""

from __future__ import annotations

import time
import warnings
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch

from ltrain.callbacks.base import Callback
from ltrain.trainer.log_rows import row_due

if TYPE_CHECKING:
    from ltrain.module import Module
    from ltrain.trainer.trainer import Trainer


class Throughput:
    """Running totals and windowed rates for one stage (what one device saw)."""

    def __init__(
        self,
        available_flops: float | None = None,
        world_size: int = 1,
        window_size: int = 100,
        separator: str = "/",
    ) -> None:
        if window_size < 2:
            raise ValueError(f"window_size must be at least 2, got {window_size}")
        self.available_flops = available_flops
        self.world_size = world_size
        self.separator = separator
        self.window_size = window_size
        self.reset()

    def reset(self) -> None:
        window = self.window_size
        self._time: deque[float] = deque(maxlen=window)
        self._batches: deque[int] = deque(maxlen=window)
        self._samples: deque[int] = deque(maxlen=window)
        self._lengths: deque[int] = deque(maxlen=window)
        self._flops: deque[float] = deque(maxlen=window)

    def update(
        self,
        *,
        time: float,
        batches: int,
        samples: int,
        lengths: int | None = None,
        flops: float | None = None,
    ) -> None:
        """Totals so far (`flops`: those of this update's batch)."""
        self._time.append(time)
        self._batches.append(batches)
        self._samples.append(samples)
        if lengths is not None:
            self._lengths.append(lengths)
        if flops is not None:
            self._flops.append(flops * self.world_size)

    def compute(self) -> dict[str, float]:
        sep, several = self.separator, self.world_size > 1
        metrics: dict[str, float] = {
            "time": self._time[-1],
            "batches": self._batches[-1],
            "samples": self._samples[-1],
        }
        if self._lengths:
            metrics["lengths"] = self._lengths[-1]
        full = len(self._time) == self.window_size
        elapsed = self._time[-1] - self._time[0]
        if full:
            batches_per_sec = (self._batches[-1] - self._batches[0]) / elapsed
            samples_per_sec = (self._samples[-1] - self._samples[0]) / elapsed
            metrics[f"device{sep}batches_per_sec"] = batches_per_sec
            metrics[f"device{sep}samples_per_sec"] = samples_per_sec
            if several:
                metrics["batches_per_sec"] = batches_per_sec * self.world_size
                metrics["samples_per_sec"] = samples_per_sec * self.world_size
            if len(self._lengths) == self.window_size:
                items_per_sec = (self._lengths[-1] - self._lengths[0]) / elapsed
                metrics[f"device{sep}items_per_sec"] = items_per_sec
                if several:
                    metrics["items_per_sec"] = items_per_sec * self.world_size
        if len(self._flops) == self.window_size:
            flops_per_sec = (sum(self._flops) - self._flops[0]) / elapsed
            if several:
                metrics["flops_per_sec"] = flops_per_sec
            metrics[f"device{sep}flops_per_sec"] = flops_per_sec / self.world_size
            if self.available_flops:
                metrics[f"device{sep}mfu"] = flops_per_sec / self.world_size / self.available_flops
        return metrics


class ThroughputMonitor(Callback):
    """`batch_size_fn(batch)`: the samples in a batch; `length_fn(batch)`: its items (tokens,
    say); other keyword arguments (`window_size`, `separator`, `available_flops`) go to each
    stage's `Throughput`."""

    def __init__(
        self,
        batch_size_fn: Callable[[Any], int],
        length_fn: Callable[[Any], int] | None = None,
        **kwargs: Any,
    ) -> None:
        self.batch_size_fn = batch_size_fn
        self.length_fn = length_fn
        self.available_flops: float | None = kwargs.pop("available_flops", None)
        self.kwargs = kwargs
        self._throughputs: dict[str, Throughput] = {}
        self._t0s: dict[str, float] = {}
        self._counts: dict[str, list[int]] = {}  # stage -> [batches, samples, lengths]
        self._run_batches: dict[str, int] = {}  # batches since the stage's loop started
        self._world_size = 1
        self._fitting = False
        self._module_has_flops: bool | None = None

    def setup(self, trainer: Trainer, pl_module: Module, stage: str) -> None:
        self._fitting = stage == "fit"
        self._throughputs, self._counts = {}, {}

    def _start(self, stage: str) -> None:
        if stage not in self._throughputs:
            self._throughputs[stage] = Throughput(
                available_flops=self.available_flops,
                world_size=self._world_size,
                **self.kwargs,
            )
        if self._fitting or stage not in self._counts:
            self._throughputs[stage].reset()
            self._counts[stage] = [0, 0, 0]
        self._t0s[stage] = time.perf_counter()
        self._run_batches[stage] = 0

    @torch.inference_mode()
    def _update(self, trainer: Trainer, pl_module: Module, stage: str, batch: Any) -> None:
        if trainer.strategy.root_device.type == "cuda":
            torch.cuda.synchronize()
        now = time.perf_counter()
        counts = self._counts[stage]
        if self.length_fn is not None:
            counts[2] += self.length_fn(batch)
        if self._module_has_flops is None:
            self._module_has_flops = hasattr(pl_module, "flops_per_batch")
            if not self._module_has_flops:
                warnings.warn(
                    "When using the `ThroughputMonitor`, you need to define a `flops_per_batch` "
                    f"attribute or property in {type(pl_module).__name__} to compute the FLOPs.",
                    stacklevel=2,
                )
        counts[0] += 1
        counts[1] += self.batch_size_fn(batch)
        self._throughputs[stage].update(
            time=now - self._t0s[stage],
            batches=counts[0],
            samples=counts[1],
            lengths=None if self.length_fn is None else counts[2],
            flops=getattr(pl_module, "flops_per_batch", None),
        )
        self._run_batches[stage] = self._run_batches.get(stage, 0) + 1

    def _log(self, trainer: Trainer, stage: str, step: int, with_epoch: bool) -> None:
        """One row of plain numbers (the totals stay ints), as Lightning logs them."""
        throughput = self._throughputs[stage]
        row: dict[str, Any] = {
            f"{stage}{throughput.separator}{k}": v for k, v in throughput.compute().items()
        }
        if with_epoch:
            row.setdefault("epoch", trainer.current_epoch)
        for logger in trainer._writing_loggers:
            if logger not in trainer._replay_skips:
                logger.log_metrics(row, step)
                logger.save()

    def on_train_start(self, trainer: Trainer, pl_module: Module) -> None:
        self._world_size = trainer.world_size
        if trainer.is_global_zero:
            self._start("train")

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: Module, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if not trainer.is_global_zero:
            return
        self._update(trainer, pl_module, "train", batch)
        stepped = trainer._position.stepped
        if stepped and row_due(trainer, trainer._batches_that_stepped):
            self._log(trainer, "train", trainer._batches_that_stepped - 1, with_epoch=True)

    def _evaluation_start(self, trainer: Trainer, stage: str) -> None:
        self._world_size = trainer.world_size
        if trainer.is_global_zero and not trainer.sanity_checking:
            self._start(stage)

    def _evaluation_batch_end(
        self, trainer: Trainer, pl_module: Module, stage: str, batch: Any
    ) -> None:
        if not trainer.is_global_zero or trainer.sanity_checking:
            return
        self._update(trainer, pl_module, stage, batch)
        count = self._run_batches[stage]
        if row_due(trainer, count):
            self._log(trainer, stage, count, with_epoch=False)

    def on_validation_start(self, trainer: Trainer, pl_module: Module) -> None:
        self._evaluation_start(trainer, "validate")

    def on_validation_batch_end(
        self,
        trainer: Trainer,
        pl_module: Module,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        self._evaluation_batch_end(trainer, pl_module, "validate", batch)

    def on_validation_end(self, trainer: Trainer, pl_module: Module) -> None:
        if trainer.sanity_checking or not self._fitting or not trainer.is_global_zero:
            return
        # the clock of training skips the validation: from training's last update to its own
        train, val = self._throughputs["train"]._time, self._throughputs["validate"]._time
        train_done = self._t0s["train"] + (train[-1] if train else 0.0)
        val_done = self._t0s["validate"] + (val[-1] if val else 0.0)
        self._t0s["train"] += val_done - train_done

    def on_test_start(self, trainer: Trainer, pl_module: Module) -> None:
        self._evaluation_start(trainer, "test")

    def on_test_batch_end(
        self,
        trainer: Trainer,
        pl_module: Module,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        self._evaluation_batch_end(trainer, pl_module, "test", batch)

    def on_predict_start(self, trainer: Trainer, pl_module: Module) -> None:
        self._evaluation_start(trainer, "predict")

    def on_predict_batch_end(
        self,
        trainer: Trainer,
        pl_module: Module,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        self._evaluation_batch_end(trainer, pl_module, "predict", batch)
