"""`ModelCheckpoint`: save checkpoints with Lightning's names and keep the top k by a monitored metric.

When it saves follows Lightning: at the end of a training epoch or after validation (whichever the
monitored metric comes from), every n training steps, and a step-triggered save whose metric
only validation produces waits for that validation. `last.ckpt` (save_last=True) is written at
every step-triggered save and with every other checkpoint file, so it is the latest checkpoint
(an epoch without a new top-k file leaves it as it was, as in Lightning), and at the end of a
fit that wrote no checkpoint (save_top_k=0, every_n_epochs beyond the run). A name already taken
in the folder gets Lightning's `-v1`, `-v2`, ... (`enable_version_counter`), so a second run into
the same folder never overwrites the first run's files.

`train_time_interval` saves at the first training batch end after that much training time
(timed from the start of training, then from each such save). `save_last="link"` makes
`last.ckpt` a symbolic link to the latest file this callback saved instead of a copy; before
any such file (and with save_top_k=0) it is written as a file, as in Lightning.

A new file is written (atomically) before an old one is deleted, so a kill between the two never
leaves the run without its best checkpoint.
"""

from __future__ import annotations

import math
import os
import re
import time
import warnings
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch

from ltrain.callbacks.checkpoint import Checkpoint
from ltrain.console import info
from ltrain.errors import MisconfigurationException

if TYPE_CHECKING:
    from ltrain.module import Module
    from ltrain.trainer.trainer import Trainer

_PLACEHOLDER = re.compile(r"\{([^{}:]+)(:[^{}]*)?\}")


class ModelCheckpoint(Checkpoint):
    runs_after_module = True
    CHECKPOINT_JOIN_CHAR = "-"
    CHECKPOINT_NAME_LAST = "last"
    FILE_EXTENSION = ".ckpt"
    STARTING_VERSION = 1

    def __init__(
        self,
        dirpath: str | os.PathLike | None = None,
        filename: str | None = None,
        monitor: str | None = None,
        verbose: bool = False,
        save_last: bool | Literal["link"] | None = None,
        save_top_k: int = 1,
        save_weights_only: bool = False,
        mode: str = "min",
        auto_insert_metric_name: bool = True,
        every_n_train_steps: int | None = None,
        train_time_interval: timedelta | None = None,
        every_n_epochs: int | None = None,
        save_on_train_epoch_end: bool | None = None,
        enable_version_counter: bool = True,
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
        untriggered = all(
            t is None for t in (every_n_train_steps, every_n_epochs, train_time_interval)
        )
        if bool(every_n_train_steps) + bool(every_n_epochs) + (train_time_interval is not None) > 1:
            raise MisconfigurationException(
                f"Combination of parameters every_n_train_steps={every_n_train_steps or 0}, "
                f"every_n_epochs={every_n_epochs or 0} and train_time_interval="
                f"{train_time_interval} should be mutually exclusive."
            )
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
        self.every_n_epochs = 1 if untriggered else (every_n_epochs or 0)
        self._train_time_interval = train_time_interval
        self._last_time_checked: float | None = None  # from the start of training
        self.enable_version_counter = enable_version_counter
        self._save_on_train_epoch_end = save_on_train_epoch_end
        self.best_k_models: dict[str, float] = {}  # only a monitored metric's scores
        self.kth_best_model_path = ""
        self.best_model_path = ""
        self.best_model_score: torch.Tensor | None = None  # a tensor, as Lightning's
        self.current_score: torch.Tensor | None = None  # the score of the latest top-k file
        self.last_model_path = ""
        # the global step of the latest save (none before the first optimizer step, as in
        # Lightning); a checkpoint records it, so a resume that replays the save point where
        # it was taken does not save (and version) the same files again
        self._last_global_step_saved = 0
        self._last_checkpoint_saved = ""  # the latest file this callback wrote
        self._defer_until_validation = False

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
            "last_global_step_saved": self._last_global_step_saved,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """As Lightning: the record of another folder's files gives only `best_model_path`.

        The same folder may be named relatively in one run and absolutely in the other (the
        command line resumes by absolute path): its files are renamed into this run's spelling.
        """
        stored, dirpath = state_dict.get("dirpath"), self.dirpath
        if stored is None or dirpath is None or os.path.abspath(stored) != os.path.abspath(dirpath):
            self.best_model_path = state_dict["best_model_path"]
            if self.dirpath is None:  # validate/test/predict: this callback has no folder
                return
            warnings.warn(
                f"The dirpath has changed from {stored!r} to {self.dirpath!r}, therefore"
                " `best_model_score`, `kth_best_model_path`, `last_model_path` and"
                " `best_k_models` won't be reloaded. Only `best_model_path` will be reloaded.",
                UserWarning,
                stacklevel=2,
            )
            return

        def ours(path: str) -> str:
            return os.path.join(dirpath, os.path.basename(path)) if path else path

        self.best_model_path = ours(state_dict["best_model_path"])
        self.best_model_score = state_dict["best_model_score"]
        self.best_k_models = {ours(k): v for k, v in state_dict["best_k_models"].items()}
        self.kth_best_model_path = ours(state_dict["kth_best_model_path"])
        self.last_model_path = ours(state_dict["last_model_path"])
        self._last_global_step_saved = int(state_dict.get("last_global_step_saved", 0))

    # ------------------------------------------------------------------ when to save
    def setup(self, trainer: Trainer, pl_module: Module, stage: str) -> None:
        if self.dirpath is None and stage == "fit":
            self.dirpath = os.path.join(trainer.log_dir or trainer.default_root_dir, "checkpoints")

    def _saves_on_train_epoch_end(self, trainer: Trainer) -> bool:
        """Lightning's rule: at the epoch's end, unless the validation that produces the
        metrics runs at other times than once at each epoch's end."""
        if self._save_on_train_epoch_end is not None:
            return self._save_on_train_epoch_end
        if trainer.check_val_every_n_epoch != 1:
            return False
        if not sum(trainer.num_val_batches):
            return True
        return trainer.val_check_interval == 1.0

    def _skips(self, trainer: Trainer) -> bool:
        """No saving outside fit, in fast_dev_run and the sanity check, or twice at one step."""
        return (
            bool(trainer.fast_dev_run)
            or not trainer.training
            or trainer.sanity_checking
            or self._last_global_step_saved == trainer.global_step
        )

    def on_train_start(self, trainer: Trainer, pl_module: Module) -> None:
        self._last_time_checked = time.monotonic()

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: Module, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        n = self.every_n_train_steps
        step_due = bool(n) and trainer.global_step % n == 0
        if not self._time_due(trainer) and not step_due:
            return
        metrics = self._metrics(trainer)
        if self.monitor is not None and (
            self.monitor not in metrics or self._validation_follows(trainer)
        ):
            # the metric comes from a validation that has not run yet, or that runs right
            # after this batch: save after it, with its values (as Lightning)
            self._defer_until_validation = True
            return
        if self._skips(trainer):
            return
        self._save_top_k(trainer, metrics)
        self._save_last(trainer)

    def _time_due(self, trainer: Trainer) -> bool:
        """`train_time_interval` has passed since training started or since it was last due
        (rank 0's clock decides for all ranks)."""
        if self._train_time_interval is None or self._last_time_checked is None:
            return False
        now = time.monotonic()
        elapsed = now - self._last_time_checked
        due = trainer.strategy.broadcast(elapsed >= self._train_time_interval.total_seconds())
        if due:
            self._last_time_checked = now
        return due

    def _validation_follows(self, trainer: Trainer) -> bool:
        """Validation runs right after this (the epoch's last) batch and this callback saves
        after validation, so the monitored value would be the previous validation's."""
        if self._saves_on_train_epoch_end(trainer) or not trainer.is_last_batch:
            return False
        if not trainer.val_dataloaders or not sum(trainer.num_val_batches):
            return False
        every = trainer.check_val_every_n_epoch
        return every is None or (trainer.current_epoch + 1) % every == 0

    def on_train_epoch_end(self, trainer: Trainer, pl_module: Module) -> None:
        if self._skips(trainer) or not self._saves_on_train_epoch_end(trainer):
            return
        if self._epoch_due(trainer):
            self._save_top_k(trainer, self._metrics(trainer))
        self._save_last_if_saved_now(trainer)

    def on_validation_end(self, trainer: Trainer, pl_module: Module) -> None:
        if self._skips(trainer) or self._saves_on_train_epoch_end(trainer):
            return
        if self._defer_until_validation:  # the step-triggered save that waited for it
            self._defer_until_validation = False
            self._save_top_k(trainer, self._metrics(trainer))
            self._save_last(trainer)
            return
        if self._epoch_due(trainer):
            self._save_top_k(trainer, self._metrics(trainer))
        self._save_last_if_saved_now(trainer)

    def on_train_end(self, trainer: Trainer, pl_module: Module) -> None:
        """A fit in which no save point wrote a file still ends with last.ckpt (Lightning's,
        which writes it under fast_dev_run too)."""
        if self.save_last and not self._last_checkpoint_saved:
            self.save_last_checkpoint(trainer)

    def _epoch_due(self, trainer: Trainer) -> bool:
        n = self.every_n_epochs
        return bool(n) and (trainer.current_epoch + 1) % n == 0

    # ------------------------------------------------------------------ saving
    def save_last_checkpoint(self, trainer: Trainer) -> str:
        """Write `last.ckpt` for the current position (what a resume continues from); its path.

        A `last.ckpt` this callback did not write gets a version (`last-v1.ckpt`), as in Lightning.
        """
        path = self._free_path(trainer, self.CHECKPOINT_NAME_LAST, self.last_model_path)
        previous, self.last_model_path = self.last_model_path, path  # part of the file's state
        if self.save_last == "link" and self._last_checkpoint_saved and self.save_top_k != 0:
            self._link(trainer, self._last_checkpoint_saved, path)
        else:
            self._write(trainer, path)
        if previous and previous != path:
            self._remove(trainer, previous)
        return path

    def _save_last(self, trainer: Trainer) -> None:
        if self.save_last:
            self.save_last_checkpoint(trainer)

    def _save_last_if_saved_now(self, trainer: Trainer) -> None:
        """At an epoch's or a validation's end, last.ckpt follows a file saved just now (a link
        follows the latest file whenever there is one)."""
        linked = self.save_last == "link" and self._last_checkpoint_saved
        if self._last_global_step_saved == trainer.global_step or linked:
            self._save_last(trainer)

    @staticmethod
    def _link(trainer: Trainer, target: str, path: str) -> None:
        """Point `path` at `target` with a relative symbolic link (rank 0 writes it)."""
        if not trainer.is_global_zero or os.path.abspath(target) == os.path.abspath(path):
            return
        if os.path.lexists(path):
            os.remove(path)
        os.symlink(os.path.relpath(target, os.path.dirname(path)), path)

    def _save_top_k(self, trainer: Trainer, metrics: dict[str, Any]) -> None:
        if self.save_top_k == 0:
            return
        if self.monitor is None:
            self._save_latest(trainer, metrics)
        else:
            self._save_if_top_k(trainer, metrics)

    def _write(self, trainer: Trainer, path: str) -> None:
        self._last_global_step_saved = trainer.global_step  # before: the file records it
        self._last_checkpoint_saved = path
        trainer.save_checkpoint(path, self.save_weights_only)
        if trainer.is_global_zero:  # loggers with log_model upload it (Lightning's hook)
            for logger in trainer.loggers:
                logger.after_save_checkpoint(self)

    def _metrics(self, trainer: Trainer) -> dict[str, Any]:
        """The values names and top-k choices come from: rank 0's, so all ranks choose alike."""
        metrics: dict[str, Any] = {k: float(v) for k, v in trainer.callback_metrics.items()}
        metrics["epoch"] = trainer.current_epoch
        metrics["step"] = trainer.global_step
        return trainer.strategy.broadcast(metrics)

    def _save_latest(self, trainer: Trainer, metrics: dict[str, Any]) -> None:
        """Without a monitor, the newest file is the best; none of them has a score."""
        previous = self.best_model_path
        path = self._free_path(trainer, self.format_checkpoint_name(metrics), previous)
        self.best_model_path = path  # part of the file's state
        self._write(trainer, path)
        if self.save_top_k == 1 and previous and previous != path:
            self._remove(trainer, previous)

    def _save_if_top_k(self, trainer: Trainer, metrics: dict[str, Any]) -> None:
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
        k = len(self.best_k_models) + 1 if self.save_top_k == -1 else self.save_top_k
        evicted = None
        if len(self.best_k_models) == k:
            evicted = self.kth_best_model_path
            del self.best_k_models[evicted]
        path = self._free_path(trainer, self.format_checkpoint_name(metrics), evicted)
        self.best_k_models[path] = score
        self.current_score = torch.tensor(score)
        if len(self.best_k_models) == k:  # Lightning names the k-th only once there are k
            self.kth_best_model_path = self._worst_path()
        pick = min if self.mode == "min" else max
        self.best_model_path = pick(self.best_k_models, key=self.best_k_models.__getitem__)
        self.best_model_score = torch.tensor(self.best_k_models[self.best_model_path])
        if self.verbose:
            info(
                f"{prefix} {self.monitor!r} reached {score:0.5f} (best {self.best_model_score:0.5f}), "
                f"saving model to {path!r} as top {k}"
            )
        self._write(trainer, path)
        if evicted is not None and evicted != path:
            self._remove(trainer, evicted)

    def _in_top_k(self, score: float) -> bool:
        if self.save_top_k == -1 or len(self.best_k_models) < self.save_top_k:
            return True
        worst = self.best_k_models[self.kth_best_model_path]
        return score < worst if self.mode == "min" else score > worst

    def _worst_path(self) -> str:
        pick = max if self.mode == "min" else min
        return pick(self.best_k_models, key=self.best_k_models.__getitem__)

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
        """A file in `dirpath` (known from setup on, before any checkpoint is written)."""
        return os.path.join(self.dirpath or "", name + self.FILE_EXTENSION)

    def _free_path(self, trainer: Trainer, name: str, replaceable: str | None) -> str:
        """The path for `name`, versioned (`name-v1`, ...) while the file exists and is not the
        one this save replaces."""
        path = self._path(name)
        version = self.STARTING_VERSION
        while self.enable_version_counter and path != replaceable and self._exists(trainer, path):
            path = self._path(f"{name}{self.CHECKPOINT_JOIN_CHAR}v{version}")
            version += 1
        return path

    @staticmethod
    def _exists(trainer: Trainer, path: str) -> bool:
        """Whether rank 0 sees `path` (it writes the files), so every rank picks the same name."""
        found = os.path.exists(path) if trainer.is_global_zero else False
        return trainer.strategy.reduce_boolean_decision(found, all=False)

    def _remove(self, trainer: Trainer, path: str) -> None:
        """Delete a file this callback replaced: never the checkpoint the run resumed from, one
        outside its folder, or one it still names."""
        if (
            not trainer.is_global_zero  # the rank that writes checkpoints is the one that deletes
            or path in (self.last_model_path, self.best_model_path)
            or path in self.best_k_models
            or self.dirpath is None
        ):
            return
        resumed = trainer.ckpt_path
        if resumed is not None and os.path.abspath(path) == os.path.abspath(resumed):
            return
        if Path(os.path.abspath(self.dirpath)) not in Path(os.path.abspath(path)).parents:
            return
        try:
            os.remove(path)
        except FileNotFoundError:
            pass


def first_model_checkpoint(callbacks: list[Any]) -> ModelCheckpoint | None:
    """The first ModelCheckpoint among `callbacks`: the one whose best and last files a run
    reports and `ckpt_path="best"/"last"` name (`trainer.checkpoint_callback` may be another
    `Checkpoint`, as in Lightning)."""
    return next((c for c in callbacks if isinstance(c, ModelCheckpoint)), None)
