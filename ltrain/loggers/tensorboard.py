"""`TensorBoardLogger`: TensorBoard event files (and `hparams.yaml`) in a version folder.

Every row becomes one scalar per key at the row's step, named exactly as in `metrics.csv`
(`epoch` included), so TensorBoard and pandas show the same numbers. The `tensorboard` package is
an optional extra (`ltrain[tensorboard]`) imported on first use, so `import ltrain` and the CLI
stay fast without it.

On resume, the writer starts with TensorBoard's purge marker at the step of the checkpoint's last
row and writes that step's rows again, so the events logged after the checkpoint are hidden and
none logged before it are lost, as the CSV logger truncates its file.

With `log_graph=True` the trainer adds the model's graph at the start of each stage (as Lightning
does), traced on `example_input_array` after the module's batch-transfer hooks moved it to the
model's device, as a batch would be.
"""

from __future__ import annotations

import os
import time
import warnings
from argparse import Namespace
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ltrain.loggers.base import (
    FolderLogger,
    add_prefix,
    as_params,
    flatten_params,
    require_package,
    write_hparams_yaml,
)

if TYPE_CHECKING:
    from torch import nn


class TensorBoardLogger(FolderLogger):
    """Writes `<save_dir>/<name>/version_<N>[/<sub_dir>]/events.out.tfevents.*` and hparams.yaml.

    `default_hp_metric` declares an `hp_metric` column for TensorBoard's HPARAMS tab (filled when
    the module logs `hp_metric`); unlike Lightning, no placeholder value of -1 is written, so the
    scalars stay exactly those of metrics.csv. `log_graph` adds the model's graph (see `log_graph`).
    Other keyword arguments go to `SummaryWriter`.
    """

    def __init__(
        self,
        save_dir: str | os.PathLike = ".",
        name: str | None = "lightning_logs",
        version: int | str | None = None,
        log_graph: bool = False,
        default_hp_metric: bool = True,
        prefix: str = "",
        sub_dir: str | os.PathLike | None = None,
        **kwargs: Any,
    ) -> None:
        require_package("tensorboard", "TensorBoardLogger", "tensorboard")
        super().__init__(save_dir, name, version, prefix)
        self._log_graph = log_graph
        self._default_hp_metric = default_hp_metric
        self._sub_dir = os.fspath(sub_dir) if sub_dir is not None else None
        self._purge_step: int | None = kwargs.pop("purge_step", None)
        self._writer_kwargs = kwargs
        self._writer: Any = None
        self._hparams: dict[str, Any] | None = None
        self._last_step: int | None = None
        self._rows_at_last_step: list[dict[str, Any]] = []

    @property
    def sub_dir(self) -> str | None:
        return self._sub_dir

    def _folder_of(self, version: int | str) -> str:
        folder = super()._folder_of(version)
        return folder if self._sub_dir is None else os.path.join(folder, self._sub_dir)

    @property
    def experiment(self) -> Any:
        """The `torch.utils.tensorboard.SummaryWriter`, created on first use."""
        if self._writer is None:
            earlier = _event_files(self.log_dir)
            writer = self._open_writer()
            # TensorBoard reads a folder's event files in name order, and a name is
            # `events.out.tfevents.<second>.<host>.<pid>.<n>`: within one second the writer n=10
            # sorts before n=9, and a resume's purge marker would be read before the rows it
            # hides. Such a file is opened again in the next second.
            new = _event_files(self.log_dir) - earlier
            delay = _second_of(max(earlier)) + 1 - time.time() if earlier else 0.0
            if earlier and new and min(new) < max(earlier) and 0 < delay <= 2:
                writer.close()
                for name in new:
                    os.remove(os.path.join(self.log_dir, name))
                time.sleep(delay)
                writer = self._open_writer()
            self._writer = writer
            self._purge_step = None  # written once, at the start of this writer's file
        return self._writer

    def _open_writer(self) -> Any:
        from torch.utils.tensorboard import SummaryWriter

        return SummaryWriter(
            log_dir=self.log_dir, purge_step=self._purge_step, **self._writer_kwargs
        )

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        self._write_row(add_prefix(metrics, self._prefix), step)

    def _write_row(self, row: Mapping[str, float], step: int) -> None:
        writer = self.experiment
        for key, value in row.items():
            writer.add_scalar(key, value, global_step=step)
        # a resume re-writes the rows of the checkpoint's last step after the purge marker
        if step != self._last_step:
            self._last_step, self._rows_at_last_step = step, []
        self._rows_at_last_step.append(dict(row))

    def log_graph(self, model: nn.Module, input_array: Any = None) -> None:
        """Add `model`'s graph, traced on `input_array` (default: `model.example_input_array`);
        nothing unless the logger was built with `log_graph=True`, as in Lightning."""
        if not self._log_graph:
            return
        import torch

        if input_array is None:
            input_array = getattr(model, "example_input_array", None)
        if input_array is None:
            warnings.warn(
                "TensorBoardLogger(log_graph=True) logs no graph: set `model.example_input_array` "
                "or pass `input_array` to `log_graph`",
                stacklevel=2,
            )
            return
        if not isinstance(input_array, (torch.Tensor, tuple)):
            warnings.warn(
                "TensorBoardLogger(log_graph=True) logs no graph: the input is a "
                f"{type(input_array).__name__}; give a tensor, or a tuple of forward's arguments",
                stacklevel=2,
            )
            return
        from ltrain.module import Module, _jit_scripting

        if isinstance(model, Module):
            from ltrain.exporting import to_module_device

            input_array = to_module_device(model, input_array)
            with _jit_scripting():  # jit reads the module's `trainer`, None while tracing
                self.experiment.add_graph(model, input_array)
        else:
            self.experiment.add_graph(model, input_array)

    def log_hyperparams(self, params: Mapping[str, Any] | Namespace) -> None:
        """Add `params` to the hyperparameters (the HPARAMS tab shows them all); hparams.yaml
        holds those of the first `save()`, as Lightning's TensorBoardLogger writes it."""
        self._hparams = {**(self._hparams or {}), **as_params(params)}
        self._write_hparams_summary()

    def _write_hparams_summary(self) -> None:
        from torch.utils.tensorboard.summary import hparams

        values = {}
        for key, value in flatten_params(self._hparams or {}).items():
            if isinstance(value, (bool, int, float, str)):
                values[key] = value
            elif value is not None:
                values[key] = str(value)
        metrics = dict.fromkeys(["hp_metric"] if self._default_hp_metric else [])
        writer = self.experiment.file_writer
        for summary in hparams(values, metrics):
            writer.add_summary(summary)

    def save(self) -> None:
        """Flush the events, and write hparams.yaml unless the folder has one: a run that saved no
        hyperparameters gets `{}`, as with Lightning's default logger."""
        self.experiment.flush()
        path = os.path.join(self.log_dir, "hparams.yaml")
        if not os.path.exists(path):
            write_hparams_yaml(path, self._hparams or {})

    def state_dict(self) -> dict[str, Any]:
        return {
            "event_dir": os.path.abspath(self.log_dir),
            "step": self._last_step,
            "rows": [dict(row) for row in self._rows_at_last_step],
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> bool:
        """On resume into the same folder, hide what was logged after the checkpoint."""
        if state.get("event_dir") != os.path.abspath(self.log_dir):
            return False
        step = state.get("step") or 0
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        self._purge_step = step
        if self._hparams is not None:
            self._write_hparams_summary()  # a purge at step 0 would hide the earlier ones
        self._last_step, self._rows_at_last_step = None, []
        for row in state.get("rows", []):
            self._write_row(row, step)
        return True

    def finalize(self, status: str) -> None:
        if status == "success":
            self.save()
        if self._writer is not None:
            self._writer.close()
            self._writer = None


_EVENT_FILE = "events.out.tfevents."


def _event_files(folder: str) -> set[str]:
    return {name for name in os.listdir(folder) if name.startswith(_EVENT_FILE)}


def _second_of(name: str) -> int:
    """The second an event file was opened in, from its name (0 if the name has none)."""
    second = name[len(_EVENT_FILE) :].split(".", 1)[0]
    return int(second) if second.isdigit() else 0
