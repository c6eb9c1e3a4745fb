"""`ModelCheckpoint`: save checkpoints with Lightning's names and keep the top k by a monitored metric.

A new file is written (atomically) before an old one is deleted, so a kill between the two never
leaves the run without its best checkpoint.
"""

from __future__ import annotations

import math
import os
import re
from typing import Any

import torch

from ltrain.callbacks.checkpoint import Checkpoint
from ltrain.console import info
from ltrain.errors import MisconfigurationException

_PLACEHOLDER = re.compile(r"\{([^{}:]+)(:[^{}]*)?\}")


class ModelCheckpoint(Checkpoint):
    runs_after_module = True
    CHECKPOINT_NAME_LAST = "last"
    FILE_EXTENSION = ".ckpt"

    def __init__(
        self,
        dirpath: str | os.PathLike | None = None,
        filename: str | None = None,
        monitor: str | None = None,
        verbose: bool = False,
        save_last: bool | None = None,
        save_top_k: int = 1,
        save_weights_only: bool = False,
        mode: str = "min",
        auto_insert_metric_name: bool = True,
        every_n_train_steps: int | None = None,
        every_n_epochs: int | None = None,
        save_on_train_epoch_end: bool | None = None,
    ) -> None:
        if mode not in ("min", "max"):
            raise MisconfigurationException(
                f"ModelCheckpoint mode={mode!r}: expected 'min' or 'max'"
            )
        if save_top_k < -1:
            raise MisconfigurationException(
                f"ModelCheckpoint save_top_k={save_top_k}: expected -1 (all), 0 (none) or a count"
            )
        if monitor is None and save_top_k not in (-1, 0, 1):
            raise MisconfigurationException(
                f"ModelCheckpoint(save_top_k={save_top_k}, monitor=None) is not a valid "
                "configuration. No quantity for top_k to track."
            )
        if every_n_train_steps is not None and every_n_train_steps < 0:
            raise MisconfigurationException("ModelCheckpoint every_n_train_steps must be >= 0")
        if every_n_epochs is not None and every_n_epochs < 0:
            raise MisconfigurationException("ModelCheckpoint every_n_epochs must be >= 0")
        self.dirpath = os.fspath(dirpath) if dirpath is not None else None
        self.filename = filename
        self.monitor = monitor
        self.verbose = verbose
        self.save_last = save_last
        self.save_top_k = save_top_k
        self.save_weights_only = save_weights_only
        self.mode = mode
        self.auto_insert_metric_name = auto_insert_metric_name
        self.every_n_train_steps = every_n_train_steps or 0
        self.every_n_epochs = (
            1 if every_n_epochs is None and not every_n_train_steps else (every_n_epochs or 0)
        )
        self._save_on_train_epoch_end = save_on_train_epoch_end
        self.best_k_models: dict[str, float] = {}
        self.kth_best_model_path = ""
        self.best_model_path = ""
        self.best_model_score: torch.Tensor | None = None  # a tensor, as Lightning's
        self.last_model_path = ""
        self._last_global_step_saved = -1

    @property
    def state_key(self) -> str:
        return f"ModelCheckpoint{{'monitor': {self.monitor!r}, 'mode': {self.mode!r}}}"

    def state_dict(self) -> dict[str, Any]:
        return {
            "monitor": self.monitor,
            "best_model_score": self.best_model_score,
            "best_model_path": self.best_model_path,
            "best_k_models": dict(self.best_k_models),
            "kth_best_model_path": self.kth_best_model_path,
            "last_model_path": self.last_model_path,
            "dirpath": self.dirpath,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if state_dict.get("dirpath") != self.dirpath:
            return  # another folder: its files are not ours to rank or delete
        self.best_model_score = state_dict["best_model_score"]
        self.best_model_path = state_dict["best_model_path"]
        self.best_k_models = dict(state_dict["best_k_models"])
        self.kth_best_model_path = state_dict["kth_best_model_path"]
        self.last_model_path = state_dict["last_model_path"]

    # ------------------------------------------------------------------ when to save
    def setup(self, trainer: Any, pl_module: Any, stage: str) -> None:
        if self.dirpath is None and stage == "fit":
            self.dirpath = os.path.join(trainer.log_dir or trainer.default_root_dir, "checkpoints")

    def _saves_on_train_epoch_end(self, trainer: Any) -> bool:
        if self._save_on_train_epoch_end is not None:
            return self._save_on_train_epoch_end
        if trainer.check_val_every_n_epoch != 1:
            return False
        if not sum(trainer.num_val_batches):
            return True
        return trainer.val_check_interval == 1.0

    def on_train_batch_end(
        self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        n = self.every_n_train_steps
        if n and trainer.global_step % n == 0 and not trainer.sanity_checking:
            self.save(trainer, step_triggered=True)

    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        if self._epoch_due(trainer) and self._saves_on_train_epoch_end(trainer):
            self.save(trainer)

    def on_validation_end(self, trainer: Any, pl_module: Any) -> None:
        if trainer.sanity_checking or not trainer.training:
            return
        if self._epoch_due(trainer) and not self._saves_on_train_epoch_end(trainer):
            self.save(trainer)

    def _epoch_due(self, trainer: Any) -> bool:
        n = self.every_n_epochs
        return bool(n) and (trainer.current_epoch + 1) % n == 0

    # ------------------------------------------------------------------ saving
    def save(self, trainer: Any, step_triggered: bool = False) -> None:
        """Save for the current position: a top-k file and/or `last.ckpt`.

        A step-triggered save that comes before the monitored metric exists (validation has not
        run yet) only refreshes `last.ckpt`; the top-k files wait for the metric.
        """
        # fast_dev_run suppresses checkpointing whichever trigger (epoch or step) asked for it
        if trainer.fast_dev_run:
            return
        metrics = self._metrics(trainer)
        if self.save_top_k != 0 and trainer.global_step != self._last_global_step_saved:
            if self.monitor is None:
                self._last_global_step_saved = trainer.global_step
                self._save_latest(trainer, metrics)
            elif self.monitor in metrics or not step_triggered:
                self._last_global_step_saved = trainer.global_step
                self._save_if_top_k(trainer, metrics)
        if self.save_last:
            self.save_last_checkpoint(trainer)

    def save_last_checkpoint(self, trainer: Any) -> str:
        """Write `last.ckpt` for the current position (what `--resume last` continues from)."""
        path = self._path(self.CHECKPOINT_NAME_LAST)
        trainer.save_checkpoint(path, self.save_weights_only)
        self.last_model_path = path
        return path

    def _metrics(self, trainer: Any) -> dict[str, Any]:
        """The values names and top-k choices come from: rank 0's, so all ranks choose alike."""
        metrics: dict[str, Any] = {k: float(v) for k, v in trainer.callback_metrics.items()}
        metrics["epoch"] = trainer.current_epoch
        metrics["step"] = trainer.global_step
        return trainer.strategy.broadcast(metrics)

    def _save_latest(self, trainer: Any, metrics: dict[str, Any]) -> None:
        path = self._path(self.format_checkpoint_name(metrics))
        trainer.save_checkpoint(path, self.save_weights_only)
        previous = self.best_model_path
        self.best_model_path = path
        if self.save_top_k == -1:
            self.best_k_models[path] = math.nan
        elif previous and previous != path:
            self._remove(trainer, previous)

    def _save_if_top_k(self, trainer: Any, metrics: dict[str, Any]) -> None:
        if self.monitor not in metrics:
            logged = (
                ", ".join(sorted(k for k in metrics if k not in ("epoch", "step"))) or "nothing"
            )
            raise MisconfigurationException(
                f"ModelCheckpoint(monitor={self.monitor!r}) could not find {self.monitor!r} in the "
                f"logged metrics ({logged}). Log it with self.log({self.monitor!r}, value)."
            )
        score = metrics[self.monitor]
        if math.isnan(score):
            score = math.inf if self.mode == "min" else -math.inf
        prefix = f"Epoch {trainer.current_epoch}, global step {trainer.global_step}:"
        if not self._in_top_k(score):
            if self.verbose:
                info(f"{prefix} {self.monitor!r} was not in top {self.save_top_k}")
            return
        path = self._path(self.format_checkpoint_name(metrics))
        trainer.save_checkpoint(path, self.save_weights_only)
        self.best_k_models[path] = score
        evicted = None
        if self.save_top_k != -1 and len(self.best_k_models) > self.save_top_k:
            evicted = self._worst_path()
            del self.best_k_models[evicted]
        self._update_best()
        if self.verbose:
            info(
                f"{prefix} {self.monitor!r} reached {score:0.5f} (best {self.best_model_score:0.5f}), "
                f"saving model to {path!r} as top {self.save_top_k}"
            )
        if evicted is not None and evicted != path:
            self._remove(trainer, evicted)

    def _in_top_k(self, score: float) -> bool:
        if self.save_top_k == -1 or len(self.best_k_models) < self.save_top_k:
            return True
        worst = self.best_k_models[self._worst_path()]
        return score < worst if self.mode == "min" else score > worst

    def _worst_path(self) -> str:
        pick = max if self.mode == "min" else min
        return pick(self.best_k_models, key=self.best_k_models.__getitem__)

    def _update_best(self) -> None:
        pick = min if self.mode == "min" else max
        self.best_model_path = pick(self.best_k_models, key=self.best_k_models.__getitem__)
        self.best_model_score = torch.tensor(self.best_k_models[self.best_model_path])
        self.kth_best_model_path = self._worst_path()

    def format_checkpoint_name(self, metrics: dict[str, Any]) -> str:
        """Fill the `filename` template: '{epoch}-{valid_loss:.2f}' -> 'epoch=2-valid_loss=1.91'."""
        template = self.filename or "{epoch}-{step}"

        def fill(match: re.Match) -> str:
            name, spec = match.group(1), match.group(2) or ""
            if name not in metrics:
                raise MisconfigurationException(
                    f"ModelCheckpoint filename {template!r}: {name!r} is not a logged metric "
                    f"(logged: {', '.join(sorted(metrics))})"
                )
            value = format(metrics[name], spec[1:]) if spec else str(metrics[name])
            return f"{name}={value}" if self.auto_insert_metric_name else value

        return _PLACEHOLDER.sub(fill, template)

    def _path(self, name: str) -> str:
        return os.path.join(self.dirpath, name + self.FILE_EXTENSION)

    def _remove(self, trainer: Any, path: str) -> None:
        if (
            trainer.is_global_zero  # the rank that writes checkpoints is the one that deletes
            and path not in (self.last_model_path, self.best_model_path)
            and path not in self.best_k_models
        ):
            try:
                os.remove(path)
            except FileNotFoundError:
                pass


def first_model_checkpoint(callbacks: list[Any]) -> ModelCheckpoint | None:
    """The first ModelCheckpoint among `callbacks`: the one whose best and last files a run
    reports and `ckpt_path="best"/"last"` name (`trainer.checkpoint_callback` may be another
    `Checkpoint`, as in Lightning)."""
    return next((c for c in callbacks if isinstance(c, ModelCheckpoint)), None)
