"""`CSVLogger`: `metrics.csv` and `hparams.yaml` in a version folder, readable like Lightning's.

Rows are appended and flushed as they are produced, so a crash loses none. Columns are every key
ever logged plus `epoch` and `step`, sorted; when a row brings a new key, the file is rewritten
under the new header through a temporary file and a rename, never in place.
"""

from __future__ import annotations

import csv
import io
import os
import warnings
from collections.abc import Mapping
from typing import IO, Any

from ltrain.files import write_text_atomically
from ltrain.loggers.base import FolderLogger, add_prefix


class CSVLogger(FolderLogger):
    """Writes `<save_dir>/<name>/version_<N>/metrics.csv` (N: one past the largest existing)."""

    def __init__(
        self,
        save_dir: str | os.PathLike = ".",
        name: str | None = "lightning_logs",
        version: int | str | None = None,
        prefix: str = "",
        flush_logs_every_n_steps: int = 100,
    ) -> None:
        super().__init__(save_dir, name, version, prefix)
        self._metrics: _MetricsFile | None = None
        if flush_logs_every_n_steps != 100:
            # Lightning buffers rows and writes them every n steps; here every row is written
            # and flushed as it comes (a killed run loses none, a resume writes none twice)
            warnings.warn(
                f"CSVLogger(flush_logs_every_n_steps={flush_logs_every_n_steps}): ltrain writes "
                "each row of metrics.csv as it is produced, so the argument has no effect.",
                UserWarning,
                stacklevel=2,
            )

    @property
    def metrics_file_path(self) -> str:
        return os.path.join(self.log_dir, "metrics.csv")

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        if self._metrics is None:
            self._metrics = _MetricsFile(self.metrics_file_path)
        row: dict[str, Any] = add_prefix(metrics, self._prefix)
        row["step"] = step
        self._metrics.append(row)

    def log_hyperparams(self, params: Mapping[str, Any]) -> None:
        self._write_hparams_yaml(params)

    def save(self) -> None:
        if self._metrics is not None:
            self._metrics.flush()

    def state_dict(self) -> dict[str, Any]:
        rows = self._metrics.rows if self._metrics is not None else None
        return {"metrics_file": os.path.abspath(self.metrics_file_path), "rows": rows}

    def load_state_dict(self, state: Mapping[str, Any]) -> bool:
        """On resume into the same file, drop the rows written after the checkpoint was taken."""
        if state.get("metrics_file") != os.path.abspath(self.metrics_file_path):
            return False
        rows = state.get("rows")
        if rows is not None:
            if self._metrics is None:
                self._metrics = _MetricsFile(self.metrics_file_path)
            self._metrics.truncate(rows)
        return True

    def finalize(self, status: str) -> None:
        if self._metrics is not None:
            self._metrics.close()
            self._metrics = None


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
