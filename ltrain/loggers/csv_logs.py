"""`CSVLogger`: `metrics.csv` and `hparams.yaml` in a version folder, readable like Lightning's.

Rows are appended and flushed as they are produced, so a crash loses none (Lightning buffers
them until `save()`). Columns are every key ever logged plus `step` (and `epoch` in a run),
sorted; when a row brings a new key, the file is rewritten under the new header through a
temporary file and a rename, never in place.
"""

from __future__ import annotations

import csv
import io
import os
import warnings
from argparse import Namespace
from collections.abc import Mapping
from typing import IO, Any

from ltrain.files import write_text_atomically
from ltrain.loggers.base import FolderLogger, add_prefix, as_params, write_hparams_yaml


class CSVLogger(FolderLogger):
    """Writes `<save_dir>/<name>/version_<N>/metrics.csv` (N: one past the largest existing).

    `experiment` is the `ExperimentWriter` of the version folder, as Lightning's is, so code that
    calls `logger.experiment.log_metrics(...)` or reads `metrics_file_path` keeps working.
    """

    def __init__(
        self,
        save_dir: str | os.PathLike = ".",
        name: str | None = "lightning_logs",
        version: int | str | None = None,
        prefix: str = "",
        flush_logs_every_n_steps: int = 100,
    ) -> None:
        super().__init__(save_dir, name, version, prefix)
        self._experiment: ExperimentWriter | None = None
        self._flush_logs_every_n_steps = flush_logs_every_n_steps
        if flush_logs_every_n_steps != 100:
            # Lightning buffers rows and writes them every n steps; here every row is written
            # and flushed as it comes (a killed run loses none, a resume writes none twice)
            warnings.warn(
                f"CSVLogger(flush_logs_every_n_steps={flush_logs_every_n_steps}): ltrain writes "
                "each row of metrics.csv as it is produced, so the argument changes only where "
                "the count of rows logged without a step starts again (as Lightning's flushes).",
                UserWarning,
                stacklevel=2,
            )

    @property
    def experiment(self) -> ExperimentWriter:
        """The writer of metrics.csv and hparams.yaml; asking for it claims the version folder."""
        if self._experiment is None:
            self._experiment = ExperimentWriter(self.log_dir)
        return self._experiment

    @property
    def metrics_file_path(self) -> str:
        return os.path.join(self.log_dir, ExperimentWriter.NAME_METRICS_FILE)

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        """One row; without `step`, Lightning's: the rows logged since the last `save()`."""
        experiment = self.experiment
        if step is None:
            step = experiment.unsaved_rows
        experiment.log_metrics(add_prefix(metrics, self._prefix), step)
        if (step + 1) % self._flush_logs_every_n_steps == 0:
            self.save()

    def log_hyperparams(self, params: Mapping[str, Any] | Namespace) -> None:
        self.experiment.log_hparams(as_params(params))

    def save(self) -> None:
        if self._experiment is not None:
            self._experiment.save()

    def state_dict(self) -> dict[str, Any]:
        rows = self.experiment.rows_written
        return {"metrics_file": os.path.abspath(self.metrics_file_path), "rows": rows}

    def load_state_dict(self, state: Mapping[str, Any]) -> bool:
        """On resume into the same file, drop the rows written after the checkpoint was taken."""
        if state.get("metrics_file") != os.path.abspath(self.metrics_file_path):
            return False
        rows = state.get("rows")
        if rows is not None:
            self.experiment.truncate(rows)
        return True

    def finalize(self, status: str) -> None:
        if self._experiment is not None:
            self._experiment.close()


class ExperimentWriter:
    """`CSVLogger.experiment`: metrics.csv and hparams.yaml of one version folder, as Lightning's.

    Hyperparameters accumulate over `log_hparams` calls and hparams.yaml holds them all, as
    Lightning's writer keeps them. Rows go to disk as they come; `unsaved_rows` counts those since
    the last `save()`, which Lightning's buffer length is, the step of a row logged without one.
    """

    NAME_METRICS_FILE = "metrics.csv"
    NAME_HPARAMS_FILE = "hparams.yaml"

    def __init__(self, log_dir: str) -> None:
        self.log_dir = log_dir
        self.metrics_file_path = os.path.join(log_dir, self.NAME_METRICS_FILE)
        self.hparams: dict[str, Any] = {}
        self.unsaved_rows = 0
        self._file: _MetricsFile | None = None
        os.makedirs(log_dir, exist_ok=True)

    @property
    def rows_written(self) -> int | None:
        """Data rows in metrics.csv (None before the first one this run)."""
        return self._file.rows if self._file is not None else None

    def log_metrics(self, metrics_dict: Mapping[str, Any], step: int | None = None) -> None:
        """Append one row; tensors (or other objects with `.item()`) are stored as numbers."""
        if step is None:
            step = self.unsaved_rows
        row = {k: v.item() if hasattr(v, "item") else v for k, v in metrics_dict.items()}
        row["step"] = step
        self._metrics_file().append(row)
        self.unsaved_rows += 1

    def log_hparams(self, params: Mapping[str, Any]) -> None:
        """Add `params` to the hyperparameters and rewrite hparams.yaml with all of them."""
        self.hparams.update(params)
        write_hparams_yaml(os.path.join(self.log_dir, self.NAME_HPARAMS_FILE), self.hparams)

    def save(self) -> None:
        if self._file is not None:
            self._file.flush()
        self.unsaved_rows = 0

    def truncate(self, rows: int) -> None:
        self._metrics_file().truncate(rows)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def _metrics_file(self) -> _MetricsFile:
        if self._file is None:
            self._file = _MetricsFile(self.metrics_file_path)
        return self._file


class _MetricsFile:
    """An append-only CSV whose header grows by atomic rewrite; `rows` counts its data rows."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.columns: list[str] = []
        self.rows = 0
        self._handle: IO[str] | None = None
        if os.path.exists(path):
            with open(path, newline="") as existing:
                reader = csv.reader(existing)
                self.columns = next(reader, [])
                self.rows = sum(1 for _ in reader)

    def append(self, row: Mapping[str, Any]) -> None:
        if not set(row) <= set(self.columns):
            self._rewrite(sorted(set(self.columns) | set(row)), keep=self.rows)
        if self._handle is None:
            self._handle = open(self.path, "a", newline="")
        csv.DictWriter(self._handle, self.columns, lineterminator="\n").writerow(row)
        self._handle.flush()
        self.rows += 1

    def truncate(self, rows: int) -> None:
        """Keep the first `rows` data rows (atomically); a resume goes on from there."""
        if rows < self.rows:
            self._rewrite(self.columns, keep=rows)

    def _rewrite(self, columns: list[str], keep: int) -> None:
        self.close()
        kept: list[dict[str, str]] = []
        if os.path.exists(self.path):
            with open(self.path, newline="") as existing:
                kept = list(csv.DictReader(existing))[:keep]
        text = io.StringIO()
        writer = csv.DictWriter(text, columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(kept)
        write_text_atomically(self.path, text.getvalue())
        self.columns = columns
        self.rows = len(kept)

    def flush(self) -> None:
        if self._handle is not None:
            self._handle.flush()

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None
