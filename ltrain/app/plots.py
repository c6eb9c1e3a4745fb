"""`ltrain plot`: the curves of one or more runs in one PNG, read from their metrics.csv.

One axes per metric: `train_loss_step`, `train_loss_epoch` and `valid_loss` all land on the
"loss" axes against `step`, steps as thin lines and epochs as markers, so training and validation
read together. Several runs are overlaid, one colour each. The figure is built with matplotlib's
object API on the Agg canvas, never through pyplot, so plotting changes no global backend or state
of the process that asked for it.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ltrain.app.runs_table import metric_name, read_metrics, series_kinds
from ltrain.errors import MisconfigurationException
from ltrain.files import existing_versions, version_number, write_atomically

_PHASES = ("train", "valid", "val", "test")
FORMATS = (".png", ".svg", ".pdf")
EPOCH_MARKERS = ("o", "s", "^", "D", "v", "P")


@dataclass
class Run:
    """One version folder's metrics, with the label the legend gives it."""

    folder: Path
    label: str
    metrics: Any  # a pandas DataFrame
    kinds: dict[str, str]


def metric_group(column: str) -> str:
    """The axes a column is drawn on: `valid_loss`, `train_loss_step` -> `loss`."""
    name = metric_name(column[: -len("_step")] if column.endswith("_step") else column)
    for phase in _PHASES:
        for separator in ("_", "/"):
            if name.startswith(phase + separator) and len(name) > len(phase) + 1:
                return name[len(phase) + 1 :]
    return name


def find_run(text: str, root: str | os.PathLike = "runs") -> Run:
    """A version folder, or a run folder's latest version that has metrics; `NAME` means
    `runs/NAME` when no such path exists."""
    path = Path(text)
    if not path.exists() and (Path(root) / text).is_dir():
        path = Path(root) / text
    if not path.exists():
        raise MisconfigurationException(
            f"{text}: no such run or version folder (expected runs/<name> or runs/<name>/version_N)"
        )
    if path.is_dir() and version_number(path) is not None:
        folder = path
    elif path.is_dir() and existing_versions(path):
        with_metrics = [
            path / f"version_{n}"
            for n in existing_versions(path)
            if (path / f"version_{n}" / "metrics.csv").is_file()
        ]
        if not with_metrics:
            raise MisconfigurationException(f"{text}: none of its versions has a metrics.csv")
        folder = with_metrics[-1]
    else:
        raise MisconfigurationException(
            f"{text}: not a run folder (runs/<name>) or a version folder (runs/<name>/version_N)"
        )
    metrics = read_metrics(folder)
    if metrics is None:
        raise MisconfigurationException(
            f"{folder}: no readable metrics.csv with a step column (nothing was logged?)"
        )
    label = f"{folder.parent.name}/{folder.name}"
    return Run(folder, label, metrics, series_kinds(metrics))


def available(runs: Sequence[Run]) -> list[str]:
    """What `--metric` accepts: axes names (`loss`) and logged names (`valid_loss`)."""
    names = set()
    for run in runs:
        for column in run.kinds:
            names.add(metric_group(column))
            names.add(metric_name(column[: -len("_step")] if column.endswith("_step") else column))
    return sorted(names)


def select(runs: Sequence[Run], wanted: Sequence[str]) -> list[str]:
    """The axes to draw, in order: every one logged, or those `wanted` names (axes or metrics)."""
    groups: list[str] = []
    for run in runs:
        for column in run.kinds:
            group = metric_group(column)
            if group not in groups and run.metrics[column].notna().any():
                groups.append(group)
    if not groups:
        raise MisconfigurationException(
            f"{', '.join(r.label for r in runs)}: metrics.csv holds no values yet; nothing to plot"
        )
    if not wanted:
        return sorted(groups, key=lambda g: (g != "loss", g))
    known = available(runs)
    for name in wanted:
        if name not in known:
            raise MisconfigurationException(
                f"--metric {name}: not logged by {', '.join(r.label for r in runs)}; "
                f"available: {', '.join(known)}"
            )
    return list(dict.fromkeys(wanted))


def _matches(column: str, name: str) -> bool:
    stem = metric_name(column[: -len("_step")] if column.endswith("_step") else column)
    return name in (column, stem, metric_group(column))


def figure(runs: Sequence[Run], wanted: Sequence[str] = ()) -> Any:
    """A matplotlib Figure with one axes per selected metric (see the module docstring)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    names = select(runs, wanted)
    columns = 1 if len(names) == 1 else 2
    rows = math.ceil(len(names) / columns)
    fig = Figure(figsize=(6.4 * columns, 3.8 * rows), layout="constrained")
    FigureCanvasAgg(fig)
    several = len(runs) > 1
    for index, name in enumerate(names):
        axes = fig.add_subplot(rows, columns, index + 1)
        styles: dict[str, int] = {}  # one colour (one run) or one marker (several) per column
        for run_index, run in enumerate(runs):
            # step lines first, then epoch markers, so the legend reads in that order too
            for column, kind in sorted(run.kinds.items(), key=lambda ck: (ck[1] != "step", ck[0])):
                if not _matches(column, name):
                    continue
                values = run.metrics[["step", column]].dropna()
                if values.empty:
                    continue
                style = styles.setdefault(column, len(styles))
                color = f"C{(run_index if several else style) % 10}"
                label = f"{run.label} {column}" if several else column
                if kind == "step":
                    axes.plot(
                        values["step"], values[column], color=color, linewidth=0.9, label=label
                    )
                else:
                    marker = EPOCH_MARKERS[style % len(EPOCH_MARKERS)]
                    axes.plot(
                        values["step"],
                        values[column],
                        color=color,
                        marker=marker,
                        markersize=5,
                        linestyle=":",
                        linewidth=0.8,
                        label=label,
                    )
        axes.set_title(name)
        axes.set_xlabel("step")
        axes.set_ylabel(name)
        axes.grid(alpha=0.3)
        axes.legend(fontsize="small")
    if not several:
        fig.suptitle(runs[0].label)
    return fig


def plot_runs(
    targets: Sequence[str], metrics: Sequence[str] = (), out: str | os.PathLike | None = None
) -> tuple[Any, Path]:
    """Draw `targets` (run or version folders) and write the image; returns (figure, path).

    The default path is `plot.png` in the first version folder. The file is written atomically.
    """
    runs = [find_run(t) for t in targets]
    path = Path(out) if out is not None else runs[0].folder / "plot.png"
    if path.suffix.lower() not in FORMATS:
        raise MisconfigurationException(
            f"--out {path}: expected a file ending in {', '.join(FORMATS)}"
        )
    fig = figure(runs, metrics)
    write_atomically(
        path, lambda handle: fig.savefig(handle, format=path.suffix[1:].lower(), dpi=100)
    )
    return fig, path
