"""The learning-rate finder: `lr_find` (what `Tuner(trainer).lr_find` runs) and the
`LearningRateFinder` callback, as in Lightning.

The sweep trains for up to `num_training` steps while the learning rate grows exponentially (or
linearly) from `min_lr` to `max_lr`, records the smoothed loss, stops early once the loss
diverges, and suggests the rate where the loss falls fastest. It runs on a private Trainer with
the user's device and precision; afterwards the model's weights and every random generator are
put back exactly, so a fit after the finder is the fit it would have been without it (apart from
the rate). The callback runs it at the start of fit on the fit's own data, then sets the module's
`lr` (or `attr_name`) and the configured optimizers' rates to the suggestion, so training goes on
with it; the finder, with its results, suggestion and plot, is `optimal_lr`.
"""

from __future__ import annotations

import copy
import math
import os
from typing import Any

from ltrain.callbacks.base import Callback
from ltrain.errors import MisconfigurationException


class LRFinder:
    """The sweep's learning rates and smoothed losses, with a suggestion and a plot."""

    def __init__(self, min_lr: float, max_lr: float, num_training: int) -> None:
        self.min_lr, self.max_lr, self.num_training = min_lr, max_lr, num_training
        self.results: dict[str, list[float]] = {"lr": [], "loss": []}

    def suggestion(self, skip_begin: int = 10, skip_end: int = 1) -> float | None:
        """The rate where the loss falls fastest per unit of learning rate, as Lightning 2.6 picks
        it (torch.gradient over the rates themselves); None if the sweep was too short."""
        import torch

        points = [
            (lr, loss)
            for lr, loss in list(zip(self.results["lr"], self.results["loss"], strict=True))[
                skip_begin : len(self.results["lr"]) - skip_end
            ]
            if math.isfinite(loss)
        ]
        if len(points) < 2:
            return None
        rates = torch.tensor([lr for lr, _ in points])  # float32, as Lightning computes it
        losses = torch.tensor([loss for _, loss in points])
        slopes = torch.gradient(losses, spacing=[rates])[0]
        return points[int(torch.argmin(slopes))][0]

    def plot(self, suggest: bool = True, show: bool = False) -> Any:
        """Loss against learning rate (log axis), the suggestion marked in red."""
        import matplotlib

        if not show:
            matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        figure, axes = plt.subplots(figsize=(6, 4))
        axes.plot(self.results["lr"], self.results["loss"])
        axes.set_xscale("log")
        axes.set_xlabel("Learning rate")
        axes.set_ylabel("Loss")
        suggestion = self.suggestion() if suggest else None
        if suggestion is not None:
            index = self.results["lr"].index(suggestion)
            axes.plot(suggestion, self.results["loss"][index], "o", color="red", markersize=8)
            axes.set_title(f"suggested learning rate: {suggestion:.3g}")
        if show:
            plt.show()
        return figure

    def save(self, folder: str | os.PathLike) -> tuple[str, str]:
        """Write `lr_find.csv` and `lr_find.png` into `folder` (each written atomically)."""
        import io

        from ltrain.files import write_atomically, write_text_atomically

        csv_path = os.path.join(folder, "lr_find.csv")
        png_path = os.path.join(folder, "lr_find.png")
        rows = "".join(
            f"{lr!r},{loss!r}\n"
            for lr, loss in zip(self.results["lr"], self.results["loss"], strict=True)
        )
        write_text_atomically(csv_path, "lr,loss\n" + rows)
        figure = self.plot()
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
        import matplotlib.pyplot as plt

        plt.close(figure)
        write_atomically(png_path, lambda handle: handle.write(buffer.getvalue()))
        return csv_path, png_path


class _Sweep(Callback):
    """Sets each step's learning rate and records the smoothed loss; stops on divergence."""

    def __init__(
        self,
        finder: LRFinder,
        mode: str,
        early_stop_threshold: float | None,
        beta: float = 0.98,
    ) -> None:
        self.finder = finder
        self.mode = mode
        self.threshold = early_stop_threshold
        self.beta = beta
        self.average = 0.0
        self.best = math.inf

    def _rate(self, step: int) -> float:
        """Lightning's schedule: min_lr first, then (step + 1) / num_training of the way (so the
        second step skips one point and the last one reaches max_lr), in `mode`'s spacing."""
        finder = self.finder
        fraction = 0.0 if step == 0 else (step + 1) / finder.num_training
        if self.mode == "linear":
            return finder.min_lr + fraction * (finder.max_lr - finder.min_lr)
        return finder.min_lr * (finder.max_lr / finder.min_lr) ** fraction

    def on_train_batch_start(
        self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int
    ) -> None:
        rate = self._rate(trainer.global_step)
        for optimizer in trainer.optimizers:
            for group in optimizer.param_groups:
                group["lr"] = rate

    def on_train_batch_end(
        self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        step = trainer.global_step - 1
        loss = outputs.get("loss") if isinstance(outputs, dict) else None
        if loss is None:
            return
        value = float(loss)  # one sync per step: fine for a 100-step sweep
        self.average = self.beta * self.average + (1 - self.beta) * value
        # bias-corrected as Lightning corrects it, counting one step more than were averaged
        smoothed = self.average / (1 - self.beta ** (step + 2))
        self.finder.results["lr"].append(self._rate(step))
        self.finder.results["loss"].append(smoothed)
        if not math.isfinite(smoothed):
            trainer.should_stop = True
            return
        if self.threshold is not None and step > 1 and smoothed > self.threshold * self.best:
            trainer.should_stop = True  # diverged
        self.best = min(self.best, smoothed)


def lr_find(
    user: Any,
    model: Any,
    data: tuple[Any, Any, Any],
    min_lr: float = 1e-8,
    max_lr: float = 1.0,
    num_training: int = 100,
    mode: str = "exponential",
    early_stop_threshold: float | None = 4.0,
    update_attr: bool = True,
    attr_name: str = "",
) -> LRFinder:
    """Sweep the learning rate on a private Trainer with `user`'s device and precision, the data
    being `(train_dataloaders, val_dataloaders, datamodule)`; with `update_attr`, set the model's
    `lr` (or `attr_name`) to the suggestion."""
    import torch

    from ltrain.seed import rng_state, set_rng_state
    from ltrain.strategies import SingleDeviceStrategy
    from ltrain.trainer import Trainer

    if mode not in ("exponential", "linear"):
        raise MisconfigurationException(
            f"lr_find mode={mode!r}: expected 'exponential' or 'linear'"
        )
    if not 0 < min_lr < max_lr:
        raise MisconfigurationException(
            f"lr_find: need 0 < min_lr < max_lr, got min_lr={min_lr}, max_lr={max_lr}"
        )
    if num_training < 2:
        raise MisconfigurationException(f"lr_find num_training={num_training}: expected >= 2")
    attribute = attr_name or next((a for a in ("lr", "learning_rate") if hasattr(model, a)), None)
    if update_attr and attribute is None:
        raise MisconfigurationException(
            f"lr_find: {type(model).__name__} has no `lr` or `learning_rate` attribute to "
            "update; set one (used by configure_optimizers) or pass update_attr=False."
        )
    if user.strategy.distributed:
        raise MisconfigurationException(
            "lr_find runs in one process: find the learning rate with devices=1, then train "
            "with several"
        )
    finder = LRFinder(min_lr, max_lr, num_training)
    weights = copy.deepcopy(model.state_dict())
    generators = rng_state()
    sweep = Trainer(
        strategy=SingleDeviceStrategy(user.device),
        precision=user.precision,
        max_steps=num_training,
        max_epochs=user.max_epochs,  # as in Lightning, the user's epochs can end it first
        limit_val_batches=0,
        num_sanity_val_steps=0,
        accumulate_grad_batches=user.accumulate_grad_batches,
        gradient_clip_val=user.gradient_clip_val,
        gradient_clip_algorithm=user.gradient_clip_algorithm,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[_Sweep(finder, mode, early_stop_threshold)],
        default_root_dir=user.default_root_dir,
    )
    try:
        sweep.fit(model, data[0], data[1], datamodule=data[2])
    finally:
        with torch.no_grad():
            model.load_state_dict(weights)
        set_rng_state(generators)
        model.trainer = user
        if data[2] is not None:
            data[2].trainer = user
    suggestion = finder.suggestion()
    if update_attr and attribute is not None and suggestion is not None:
        setattr(model, attribute, suggestion)
        if attribute in model.hparams:
            model.hparams[attribute] = suggestion
    return finder


class LearningRateFinder(Callback):
    """Lightning's LearningRateFinder: `lr_find(trainer, pl_module)` runs at on_fit_start;
    override on_fit_start/on_train_epoch_start to run it elsewhere (e.g. when fine-tuning)."""

    SUPPORTED_MODES = ("linear", "exponential")

    def __init__(
        self,
        min_lr: float = 1e-8,
        max_lr: float = 1,
        num_training_steps: int = 100,
        mode: str = "exponential",
        early_stop_threshold: float | None = 4.0,
        update_attr: bool = True,
        attr_name: str = "",
    ) -> None:
        mode = mode.lower()
        if mode not in self.SUPPORTED_MODES:
            raise ValueError(
                f"LearningRateFinder mode={mode!r}: expected one of {self.SUPPORTED_MODES}"
            )
        self._min_lr, self._max_lr = min_lr, max_lr
        self._num_training_steps = num_training_steps
        self._mode = mode
        self._early_stop_threshold = early_stop_threshold
        self._update_attr, self._attr_name = update_attr, attr_name
        self.optimal_lr: Any = None

    def lr_find(self, trainer: Any, pl_module: Any) -> None:
        sources = trainer._fit_sources
        data = (sources.train, sources.val, sources.datamodule)
        self.optimal_lr = lr_find(
            trainer,
            pl_module,
            data,
            self._min_lr,
            self._max_lr,
            self._num_training_steps,
            self._mode,
            self._early_stop_threshold,
            self._update_attr,
            self._attr_name,
        )
        suggestion = self.optimal_lr.suggestion()
        if self._update_attr and suggestion is not None:
            for optimizer in trainer.optimizers:
                for group in optimizer.param_groups:
                    group["lr"] = suggestion

    def on_fit_start(self, trainer: Any, pl_module: Any) -> None:
        self.lr_find(trainer, pl_module)
