"""`log_model`: which checkpoint files W&B and MLflow upload, and when (Lightning's rules).

`log_model="all"` uploads after every save, `True` once at the end of the run (or after every save
when the callback keeps every file, `save_top_k=-1`), `False` never. A scan offers the files the
ModelCheckpoint names (its last, best and top-k files) that were not uploaded yet or were written
again since (a path and its modification time are remembered, so `last.ckpt` rewritten in place
is uploaded again), oldest first; each goes with Lightning's metadata and aliases (`latest`, and
`best` for the best file), so an artifact reads the same whichever library logged it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from ltrain.errors import MisconfigurationException

if TYPE_CHECKING:
    from ltrain.callbacks.model_checkpoint import ModelCheckpoint

LogModel = bool | Literal["all"]

# the callback's settings an artifact's metadata records, under Lightning's names
_SETTINGS = {
    "monitor": "monitor",
    "mode": "mode",
    "save_last": "save_last",
    "save_top_k": "save_top_k",
    "save_weights_only": "save_weights_only",
    "_every_n_train_steps": "every_n_train_steps",
}


@dataclass
class CheckpointFile:
    """One checkpoint file to upload, its aliases and its metadata (`score`: None without a
    monitor, `original_filename`, and the callback's settings)."""

    path: str
    aliases: list[str]
    metadata: dict[str, Any]


def check_log_model(logger: str, log_model: Any) -> LogModel:
    """`log_model` as given, or a one-line error naming the valid values."""
    if log_model is True or log_model is False or log_model == "all":
        return log_model
    raise MisconfigurationException(
        f"{logger}(log_model={log_model!r}): expected True (upload checkpoints at the end of "
        "training), 'all' (after every save) or False"
    )


class CheckpointUploads:
    """What a logger with `log_model` uploads: `after_save` and `at_end` return the files due."""

    def __init__(self, log_model: LogModel, settings_key: str) -> None:
        self.log_model = log_model
        self._settings_key = settings_key  # W&B names it after the callback class, MLflow not
        self._uploaded: dict[str, float] = {}  # path: modification time when uploaded
        self._at_end: dict[int, ModelCheckpoint] = {}

    def after_save(self, callback: ModelCheckpoint) -> list[CheckpointFile]:
        """The files to upload now that `callback` saved one (none until the end with True)."""
        if self.log_model == "all" or (self.log_model is True and callback.save_top_k == -1):
            return self._new_files(callback)
        if self.log_model is True:
            self._at_end[id(callback)] = callback
        return []

    def at_end(self) -> list[CheckpointFile]:
        """The files of the callbacks remembered for the end of the run (`log_model=True`)."""
        return [file for callback in self._at_end.values() for file in self._new_files(callback)]

    def _new_files(self, callback: ModelCheckpoint) -> list[CheckpointFile]:
        scores: dict[str, Any] = {}
        if callback.last_model_path:
            scores[callback.last_model_path] = callback.current_score
        if callback.best_model_path:
            scores[callback.best_model_path] = callback.best_model_score
        scores.update(callback.best_k_models)
        found = sorted(
            (os.path.getmtime(path), path) for path in scores if path and os.path.isfile(path)
        )
        settings = {
            name: getattr(callback, attribute)
            for name, attribute in _SETTINGS.items()
            if hasattr(callback, attribute)
        }
        files = []
        for modified, path in found:
            if path in self._uploaded and self._uploaded[path] >= modified:
                continue
            self._uploaded[path] = modified
            score = scores[path]
            score = score.item() if hasattr(score, "item") else score
            metadata = {
                "score": score,
                "original_filename": Path(path).name,
                self._settings_key: dict(settings),
            }
            best = path == callback.best_model_path
            aliases = ["latest", "best"] if best else ["latest"]
            files.append(CheckpointFile(path, aliases, metadata))
        return files
