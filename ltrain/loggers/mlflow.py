"""`MLFlowLogger` (also `MLflowLogger`): rows and hyperparameters into an MLflow run.

Each row's values become metrics at the row's step, named as in `metrics.csv` (`epoch`
included); hyperparameters become the run's params (nested dicts as `outer/inner`). The `mlflow`
package (`mlflow-skinny` is enough) is an optional extra, `ltrain[mlflow]`, imported when the run
starts, which is on first use. MLflow's errors (an unreachable server, a refused store) become one
line naming the tracking URI.

`log_model` logs checkpoint files as the run's artifacts, as Lightning lays them out: each under
`<file stem>/` (`epoch=1-step=8/epoch=1-step=8.ckpt`) beside a `metadata.yaml` (score, original
file name, the ModelCheckpoint's settings) and an `aliases.txt` (`['latest', 'best']`);
`checkpoint_uploads.py` says which files and when.
"""

from __future__ import annotations

import os
import re
import tempfile
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from ltrain.errors import MisconfigurationException
from ltrain.loggers.base import Logger, add_prefix, flatten_params, require_package
from ltrain.loggers.checkpoint_uploads import CheckpointFile, CheckpointUploads, check_log_model

if TYPE_CHECKING:
    from ltrain.callbacks.model_checkpoint import ModelCheckpoint

# what MLflow accepts in metric names on every platform
_INVALID_NAME_CHARACTERS = re.compile(r"[^\w/.\- ]")
# MLflow's limits per log_batch call
_MAX_PARAMS, _MAX_METRICS = 100, 1000
_RUN_STATUS = {"success": "FINISHED", "failed": "FAILED", "interrupted": "KILLED"}


class MLFlowLogger(Logger):
    """Logs to the MLflow tracking store at `tracking_uri`.

    Without `tracking_uri` (nor `MLFLOW_TRACKING_URI`), the store is the folder `save_dir`
    (`file:` URI); MLflow 3.14+ refuses such a store unless `MLFLOW_ALLOW_FILE_STORE=true`, and
    then so does this constructor, before a run starts.
    `run_id` continues an existing run instead of starting one. `log_model`: log checkpoints as
    artifacts, at the end of the run (True) or after every save ("all").
    """

    writes_version_folder: ClassVar[bool] = False

    def __init__(
        self,
        experiment_name: str = "lightning_logs",
        run_name: str | None = None,
        tracking_uri: str | None = None,
        tags: dict[str, Any] | None = None,
        save_dir: str | os.PathLike | None = "./mlruns",
        log_model: bool | Literal["all"] = False,
        prefix: str = "",
        artifact_location: str | None = None,
        run_id: str | None = None,
        synchronous: bool | None = None,
    ) -> None:
        require_package("mlflow", "MLFlowLogger", "mlflow")
        self._uploads = CheckpointUploads(check_log_model("MLFlowLogger", log_model), "Checkpoint")
        tracking_uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
        if not tracking_uri:
            if save_dir is None:
                raise MisconfigurationException(
                    "MLFlowLogger: give tracking_uri (or set MLFLOW_TRACKING_URI) or save_dir"
                )
            tracking_uri = Path(save_dir).absolute().as_uri()
        if tracking_uri.startswith("file:"):
            _check_file_store_allowed(tracking_uri)
        self._tracking_uri = tracking_uri
        self._experiment_name = experiment_name
        self._run_name = run_name
        self._tags = dict(tags or {})
        self._prefix = prefix
        self._artifact_location = artifact_location
        self._run_id = run_id
        self._synchronous = synchronous
        self._experiment_id: str | None = None
        self._client: Any = None
        self._renamed: set[str] = set()

    @property
    def tracking_uri(self) -> str:
        return self._tracking_uri

    @property
    def name(self) -> str:
        """The experiment id, as in Lightning."""
        return self.experiment_id

    @property
    def version(self) -> str:
        """The run id, as in Lightning."""
        return self.run_id

    @property
    def save_dir(self) -> str | None:
        """The store's folder when it is a local `file:` store."""
        if not self._tracking_uri.startswith("file:"):
            return None
        from urllib.parse import unquote, urlparse

        return unquote(urlparse(self._tracking_uri).path)

    @property
    def experiment_id(self) -> str:
        self._start()
        assert self._experiment_id is not None, "_start sets it or raises"
        return self._experiment_id

    @property
    def run_id(self) -> str:
        self._start()
        assert self._run_id is not None, "_start sets it or raises"
        return self._run_id

    @property
    def experiment(self) -> Any:
        """The `MlflowClient`; the experiment and the run are created on first use."""
        return self._start()

    def _start(self) -> Any:
        if self._client is None:
            from mlflow.tracking import MlflowClient

            with self._errors():
                client = MlflowClient(tracking_uri=self._tracking_uri)
                if self._run_id is not None:
                    self._experiment_id = client.get_run(self._run_id).info.experiment_id
                else:
                    found = client.get_experiment_by_name(self._experiment_name)
                    if found is not None:
                        self._experiment_id = found.experiment_id
                    else:
                        self._experiment_id = client.create_experiment(
                            self._experiment_name, artifact_location=self._artifact_location
                        )
                    run = client.create_run(
                        self._experiment_id, tags=self._tags, run_name=self._run_name
                    )
                    self._run_id = run.info.run_id
            self._client = client
        return self._client

    @contextmanager
    def _errors(self) -> Iterator[None]:
        from mlflow.exceptions import MlflowException

        try:
            yield
        except MlflowException as error:
            message = " ".join(str(error.message).split())
            raise MisconfigurationException(
                f"MLFlowLogger (tracking_uri {self._tracking_uri!r}): {message}"
            ) from None

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        from mlflow.entities import Metric

        client = self.experiment
        timestamp = int(time.time() * 1000)
        entries = [
            Metric(self._metric_name(key), value, timestamp, step)
            for key, value in add_prefix(metrics, self._prefix).items()
        ]
        for chunk in _chunks(entries, _MAX_METRICS):
            self._log_batch(client, metrics=chunk)

    def _metric_name(self, key: str) -> str:
        name = _INVALID_NAME_CHARACTERS.sub("_", key)
        if name != key and key not in self._renamed:
            self._renamed.add(key)
            warnings.warn(
                f"MLFlowLogger: metric {key!r} is logged as {name!r}; MLflow names may hold "
                "letters, digits, '_', '-', '.', ' ' and '/'",
                stacklevel=3,
            )
        return name

    def log_hyperparams(self, params: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        client = self.experiment
        entries = [Param(key, str(value)) for key, value in flatten_params(params).items()]
        for chunk in _chunks(entries, _MAX_PARAMS):
            self._log_batch(client, params=chunk)

    def _log_batch(self, client: Any, **entries: Any) -> None:
        options = {} if self._synchronous is None else {"synchronous": self._synchronous}
        with self._errors():
            client.log_batch(self._run_id, **entries, **options)

    def after_save_checkpoint(self, checkpoint_callback: ModelCheckpoint) -> None:
        for file in self._uploads.after_save(checkpoint_callback):
            self._upload(file)

    def finalize(self, status: str) -> None:
        """Log the checkpoints due at the end (`log_model=True`; whatever the status, as in
        Lightning), then mark the run FINISHED, FAILED or KILLED; a later `test` still logs into
        it."""
        if self._client is None:
            return
        for file in self._uploads.at_end():
            self._upload(file)
        with self._errors():
            self._client.set_terminated(self._run_id, _RUN_STATUS.get(status, "FINISHED"))

    def _upload(self, file: CheckpointFile) -> None:
        import yaml

        client, folder = self.experiment, Path(file.path).stem
        with self._errors(), tempfile.TemporaryDirectory() as notes:
            client.log_artifact(self._run_id, file.path, folder)
            with open(os.path.join(notes, "metadata.yaml"), "w") as metadata:
                yaml.safe_dump(file.metadata, metadata, default_flow_style=False)
            with open(os.path.join(notes, "aliases.txt"), "w") as aliases:
                aliases.write(str(file.aliases))
            client.log_artifacts(self._run_id, notes, folder)


MLflowLogger = MLFlowLogger


def _check_file_store_allowed(uri: str) -> None:
    """Refuse before the run starts where MLflow would refuse the file store at first use."""
    try:
        from mlflow.environment_variables import MLFLOW_ALLOW_FILE_STORE
    except ImportError:
        return  # MLflow before 3.14 takes file stores without asking
    if not MLFLOW_ALLOW_FILE_STORE.get():
        raise MisconfigurationException(
            f"MLFlowLogger: this MLflow refuses the file store {uri} unless "
            "MLFLOW_ALLOW_FILE_STORE=true is set; set it, or pass tracking_uri (a tracking "
            "server, or sqlite:///mlflow.db with the full mlflow package)"
        )


def _chunks(entries: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(entries), size):
        yield entries[start : start + size]
