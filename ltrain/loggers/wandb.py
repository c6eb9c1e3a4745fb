"""`WandbLogger`: rows and hyperparameters into a Weights & Biases run.

Each row is one `run.log` call holding the row's values (named as in `metrics.csv`, `epoch`
included) and `trainer/global_step`, which the run's charts use as their x axis: W&B's own step
must increase with every call, while several of ltrain's rows share a step. The `wandb` package is
an optional extra (`ltrain[wandb]`) imported when the run starts, which is on first use.

The run stays open after `fit` (as in Lightning), so a following `test` logs into it; W&B closes
it when the process ends, or call `logger.experiment.finish()`.

`log_model` uploads checkpoints as artifacts of type "model" named `model-<run id>` (or
`checkpoint_name`), one version per file holding it as `model.ckpt`; `checkpoint_uploads.py` says
which files and when. Images, tables, audio and video go in through `run.log` at
`trainer/global_step` like the rows.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from ltrain.errors import MisconfigurationException
from ltrain.loggers.base import Logger, add_prefix, require_package, yaml_safe_items
from ltrain.loggers.checkpoint_uploads import CheckpointFile, CheckpointUploads, check_log_model

if TYPE_CHECKING:
    from torch import nn

    from ltrain.callbacks.model_checkpoint import ModelCheckpoint

STEP_KEY = "trainer/global_step"


class WandbLogger(Logger):
    """Logs to W&B; `offline=True` keeps the run on disk (`<save_dir>/wandb/offline-run-*`).

    `version`/`id` resume the W&B run with that id; other keyword arguments go to `wandb.init`
    (`entity`, `tags`, `group`, `mode`, ...). `log_model`: upload checkpoints as artifacts, at the
    end of training (True) or after every save ("all"); `add_file_policy="mutable"` copies each
    file before it is uploaded, so a checkpoint rewritten meanwhile is uploaded as it was.
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
        log_model: bool | Literal["all"] = False,
        prefix: str = "",
        checkpoint_name: str | None = None,
        add_file_policy: Literal["mutable", "immutable"] = "mutable",
        **kwargs: Any,
    ) -> None:
        require_package("wandb", "WandbLogger", "wandb")
        log_model = check_log_model("WandbLogger", log_model)
        if offline and log_model:
            raise MisconfigurationException(
                f"WandbLogger(offline=True, log_model={log_model!r}): an offline run uploads no "
                "checkpoints; set offline=False or log_model=False"
            )
        if add_file_policy not in ("mutable", "immutable"):
            raise MisconfigurationException(
                f"WandbLogger(add_file_policy={add_file_policy!r}): expected 'mutable' or "
                "'immutable'"
            )
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
        self._uploads = CheckpointUploads(log_model, "ModelCheckpoint")
        self._checkpoint_name = checkpoint_name
        self._add_file_policy = add_file_policy

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

    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        """One `run.log` call; with a `step`, it goes in as `trainer/global_step` (the x axis)."""
        row: dict[str, Any] = add_prefix(metrics, self._prefix)
        if step is not None:
            row[STEP_KEY] = step
        self.experiment.log(row)

    def log_hyperparams(self, params: Mapping[str, Any]) -> None:
        plain = yaml_safe_items(params, "WandbLogger")
        self.experiment.config.update(plain, allow_val_change=True)

    def watch(
        self,
        model: nn.Module,
        log: str | None = "gradients",
        log_freq: int = 100,
        log_graph: bool = True,
    ) -> None:
        """`wandb.watch`: histograms of the gradients (`log="parameters"`, `"all"`, or None)
        every `log_freq` steps, and the graph."""
        self.experiment.watch(model, log=log, log_freq=log_freq, log_graph=log_graph)

    def log_table(
        self,
        key: str,
        columns: list[str] | None = None,
        data: list[list[Any]] | None = None,
        dataframe: Any = None,
        step: int | None = None,
    ) -> None:
        """A `wandb.Table` from `columns` and `data` rows, or from a pandas `dataframe`."""
        import wandb

        header: list[Any] | None = columns  # wandb's hint: list[str | int]
        self.log_metrics({key: wandb.Table(columns=header, data=data, dataframe=dataframe)}, step)

    def log_text(
        self,
        key: str,
        columns: list[str] | None = None,
        data: list[list[str]] | None = None,
        dataframe: Any = None,
        step: int | None = None,
    ) -> None:
        """Text as a table, as `log_table`."""
        self.log_table(key, columns, data, dataframe, step)

    def log_image(
        self, key: str, images: list[Any], step: int | None = None, **kwargs: Any
    ) -> None:
        """Images (tensors, arrays, PIL images or paths); each keyword is a list with one value
        per image (`caption=[...]`, `masks=[...]`)."""
        self._log_media("log_image", "Image", key, images, step, kwargs)

    def log_audio(
        self, key: str, audios: list[Any], step: int | None = None, **kwargs: Any
    ) -> None:
        """Audio clips (arrays or paths); keywords as in `log_image` (`sample_rate=[...]`)."""
        self._log_media("log_audio", "Audio", key, audios, step, kwargs)

    def log_video(
        self, key: str, videos: list[Any], step: int | None = None, **kwargs: Any
    ) -> None:
        """Videos (arrays or paths); keywords as in `log_image` (`fps=[...]`)."""
        self._log_media("log_video", "Video", key, videos, step, kwargs)

    def _log_media(
        self,
        method: str,
        kind: str,
        key: str,
        items: list[Any],
        step: int | None,
        options: dict[str, Any],
    ) -> None:
        if not isinstance(items, list):
            raise TypeError(f"WandbLogger.{method}: expected a list, got {type(items).__name__}")
        for name, values in options.items():
            if len(values) != len(items):
                raise ValueError(
                    f"WandbLogger.{method}: {name} has {len(values)} values for "
                    f"{len(items)} items; give one per item"
                )
        import wandb

        media = getattr(wandb, kind)
        logged = [
            media(item, **{name: values[i] for name, values in options.items()})
            for i, item in enumerate(items)
        ]
        self.log_metrics({key: logged}, step)

    def use_artifact(self, artifact: str, artifact_type: str | None = None) -> Any:
        """Mark `artifact` (`"entity/project/name:alias"`) as used by this run; the artifact."""
        return self.experiment.use_artifact(artifact, type=artifact_type)

    @staticmethod
    def download_artifact(
        artifact: str,
        save_dir: str | os.PathLike | None = None,
        artifact_type: str | None = None,
        use_artifact: bool | None = True,
    ) -> str:
        """Download `artifact` into `save_dir` (W&B's cache folder if None); the folder.

        Within a run (and with `use_artifact`) the run records that it used the artifact.
        """
        import wandb

        if wandb.run is not None and use_artifact:
            found = wandb.run.use_artifact(artifact)
        else:
            found = wandb.Api().artifact(artifact, type=artifact_type)
        return found.download(root=None if save_dir is None else os.fspath(save_dir))

    def after_save_checkpoint(self, checkpoint_callback: ModelCheckpoint) -> None:
        for file in self._uploads.after_save(checkpoint_callback):
            self._upload(file)

    def finalize(self, status: str) -> None:
        """With `log_model=True`, upload the checkpoints (only after a successful run, as in
        Lightning)."""
        if status == "success" and self._run is not None:
            for file in self._uploads.at_end():
                self._upload(file)

    def _upload(self, file: CheckpointFile) -> None:
        import wandb

        run = self.experiment
        name = self._checkpoint_name or f"model-{run.id}"
        artifact = wandb.Artifact(name=name, type="model", metadata=file.metadata)
        artifact.add_file(file.path, name="model.ckpt", policy=self._add_file_policy)
        run.log_artifact(artifact, aliases=file.aliases)
