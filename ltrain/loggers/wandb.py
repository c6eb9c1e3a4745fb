"""`WandbLogger`: rows and hyperparameters into a Weights & Biases run.

Each row is one `run.log` call holding the row's values (named as in `metrics.csv`, `epoch`
included) and `trainer/global_step`, which the run's charts use as their x axis: W&B's own step
must increase with every call, while several of ltrain's rows share a step. The `wandb` package is
an optional extra (`ltrain[wandb]`) imported when the run starts, which is on first use.

The run stays open after `fit` (as in Lightning), so a following `test` logs into it; W&B closes
it when the process ends, or call `logger.experiment.finish()`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, ClassVar

from ltrain.loggers.base import Logger, add_prefix, require_package, yaml_safe_items

STEP_KEY = "trainer/global_step"


class WandbLogger(Logger):
    """Logs to W&B; `offline=True` keeps the run on disk (`<save_dir>/wandb/offline-run-*`).

    `version`/`id` resume the W&B run with that id; other keyword arguments go to `wandb.init`
    (`entity`, `tags`, `group`, `mode`, ...).
    """

    writes_version_folder: ClassVar[bool] = False

    def __init__(
        self,
        name: str | None = None,
        save_dir: str | os.PathLike = ".",
        version: str | None = None,
        offline: bool = False,
        dir: str | os.PathLike | None = None,
        id: str | None = None,
        project: str | None = None,
        prefix: str = "",
        **kwargs: Any,
    ) -> None:
        require_package("wandb", "WandbLogger", "wandb")
        if dir is not None and os.fspath(save_dir) == ".":
            save_dir = dir
        self._save_dir = os.fspath(save_dir)
        self._project = project or os.environ.get("WANDB_PROJECT", "lightning_logs")
        self._id = version or id
        self._prefix = prefix
        self._init_kwargs: dict[str, Any] = {"name": name, **kwargs}
        if offline:
            self._init_kwargs["mode"] = "offline"
        self._run: Any = None

    @property
    def name(self) -> str:
        """The project, as in Lightning (the run's display name is `experiment.name`)."""
        return self._project

    @property
    def version(self) -> str | None:
        """The run id: the one given, else W&B's once the run has started."""
        return self._run.id if self._run is not None else self._id

    @property
    def save_dir(self) -> str:
        return self._save_dir

    @property
    def experiment(self) -> Any:
        """The `wandb` run, started on first use."""
        if self._run is None:
            import wandb

            # absolute: W&B's service process, started once per Python process, keeps its cwd
            folder = os.path.abspath(self._save_dir)
            os.makedirs(folder, exist_ok=True)
            options: dict[str, Any] = {"resume": "allow"} if self._id else {}
            options.update(self._init_kwargs)
            self._run = wandb.init(project=self._project, dir=folder, id=self._id, **options)
            self._run.define_metric(STEP_KEY)
            self._run.define_metric("*", step_metric=STEP_KEY, step_sync=True)
        return self._run

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        row: dict[str, Any] = add_prefix(metrics, self._prefix)
        row[STEP_KEY] = step
        self.experiment.log(row)

    def log_hyperparams(self, params: Mapping[str, Any]) -> None:
        plain = yaml_safe_items(params, "WandbLogger")
        self.experiment.config.update(plain, allow_val_change=True)
