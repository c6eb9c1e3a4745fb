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

from ltrain.loggers.base import Logger
from ltrain.runs import claim_version_folder, write_text_atomically


class CSVLogger(Logger):
    """Writes `<save_dir>/<name>/version_<N>/metrics.csv` (N: one past the largest existing)."""

    def __init__(
        self,
        save_dir: str | os.PathLike = ".",
        name: str | None = "lightning_logs",
        version: int | str | None = None,
        prefix: str = "",
        flush_logs_every_n_steps: int = 100,
    ) -> None:
        self._save_dir = os.fspath(save_dir)
        self._name = name or ""
        self._version = version
        self._prefix = prefix
        self._log_dir: str | None = None
        self._metrics: _MetricsFile | None = None

    @property
    def name(self) -> str:
        return self._name

    @property
    def save_dir(self) -> str:
        return self._save_dir

    @property
    def root_dir(self) -> str:
        return os.path.join(self._save_dir, self._name)

    @property
    def version(self) -> int | str:
        """The version number; asking for it claims the folder (one `mkdir`, never shared)."""
        if self._version is None:
            self._claim()
        return self._version

    @property
    def log_dir(self) -> str:
        if self._log_dir is None:
            if self._version is None:
                self._claim()
            else:
                self._log_dir = self.fixed_log_dir
                os.makedirs(self._log_dir, exist_ok=True)
        return self._log_dir

    def _claim(self) -> None:
        self._version, path = claim_version_folder(self.root_dir)
        self._log_dir = os.fspath(path)

    @property
    def fixed_log_dir(self) -> str | None:
        """The version folder if the version is already known, without creating anything."""
        if self._version is None:
            return None
        version = self._version
        folder = version if isinstance(version, str) else f"version_{version}"
        return os.path.join(self.root_dir, folder)

    @property
    def metrics_file_path(self) -> str:
        return os.path.join(self.log_dir, "metrics.csv")

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        if self._metrics is None:
            self._metrics = _MetricsFile(self.metrics_file_path)
        row = {f"{self._prefix}-{k}" if self._prefix else k: v for k, v in metrics.items()}
        row["step"] = step
        self._metrics.append(row)

    def log_hyperparams(self, params: Mapping[str, Any]) -> None:
        import yaml

        plain = {}
        for key, value in params.items():
            try:
                yaml.safe_dump(value)
            except yaml.YAMLError:
                warnings.warn(
                    f"hparams.yaml: skipping {key!r}, a {type(value).__name__} cannot be written as "
                    "plain YAML",
                    stacklevel=2,
                )
                continue
            plain[key] = value
        text = yaml.safe_dump(plain, sort_keys=True) if plain else "{}\n"
        write_text_atomically(os.path.join(self.log_dir, "hparams.yaml"), text)

    def save(self) -> None:
        if self._metrics is not None:
            self._metrics.flush()

    def state_dict(self) -> dict[str, Any]:
        rows = self._metrics.rows if self._metrics is not None else None
        return {"metrics_file": os.path.abspath(self.metrics_file_path), "rows": rows}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """On resume into the same file, drop the rows written after the checkpoint was taken."""
        rows = state.get("rows")
        if rows is None or state.get("metrics_file") != os.path.abspath(self.metrics_file_path):
            return
        if self._metrics is None:
            self._metrics = _MetricsFile(self.metrics_file_path)
        self._metrics.truncate(rows)

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
