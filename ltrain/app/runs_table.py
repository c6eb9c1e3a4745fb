"""`ltrain runs`: one pandas table of every version folder under a runs root.

Each row is read from the folder's files, never from a separate index that could go stale:
`run.json` (state, duration, best checkpoint), `metrics.csv` (epochs, last epoch values, and the
best value when run.json has none) and `config.yaml` (what changed since the previous version).
Folders written before run.json existed, or by a Trainer started from Python, still get a row with
whatever their files tell. The terminal view drops columns until the table fits the width, the
`--csv` view keeps them all.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from ltrain.errors import MisconfigurationException
from ltrain.files import existing_versions, version_number
from ltrain.run_record import STATES, process_alive, read_run

FIXED = (
    "name",
    "version",
    "command",
    "state",
    "started",
    "duration_s",
    "epochs",
    "global_step",
    "monitor",
    "mode",
    "best",
    "best_checkpoint",
)
TRAILING = ("changes", "message", "device", "precision", "git_commit", "command_line", "path")
SORT_ALIASES = {"duration": "duration_s", "v": "version", "step": "global_step"}


# ---------------------------------------------------------------------- finding version folders
def version_folders(
    root: str | os.PathLike, name: str | None = None, study: str | None = None
) -> list[Path]:
    """Every version folder under `root` (a runs root, one run's folder, or a version folder).

    `name` keeps the runs whose name matches it (a shell pattern such as `digits*` works);
    `study` keeps the trials of that `ltrain search` study (their run.json names it).
    """
    from fnmatch import fnmatchcase

    root = Path(root)
    if not root.exists():
        raise MisconfigurationException(f"{root}: no such runs folder")
    if not root.is_dir():
        raise MisconfigurationException(f"{root}: not a folder; pass a runs folder such as runs/")
    if version_number(root) is not None:
        runs = {root.parent.name: [root]}
    elif existing_versions(root):
        runs = {root.name: _versions_of(root)}
    else:
        runs = {}
        for child in sorted(root.iterdir()):
            if child.is_dir() and existing_versions(child):
                runs[child.name] = _versions_of(child)
    if name is not None:
        matching = {k: v for k, v in runs.items() if fnmatchcase(k, name)}
        if not matching:
            known = ", ".join(sorted(runs)) or "none"
            raise MisconfigurationException(
                f"--name {name}: no run of that name under {root}; runs there: {known}"
            )
        runs = matching
    folders = [folder for folders in runs.values() for folder in folders]
    if study is not None:
        folders = [
            f for f in folders if ((read_run(f) or {}).get("search") or {}).get("study") == study
        ]
        if not folders:
            raise MisconfigurationException(f"--study {study}: no trial of that study under {root}")
    return folders


def searched_keys(folders: Sequence[Path]) -> list[str]:
    """The config keys `ltrain search` varied in these trials (their run.json's params)."""
    keys: dict[str, None] = {}
    for folder in folders:
        search = (read_run(folder) or {}).get("search") or {}
        keys.update(dict.fromkeys(search.get("params") or {}))
    return list(keys)


def _versions_of(run_folder: Path) -> list[Path]:
    return [run_folder / f"version_{n}" for n in existing_versions(run_folder)]


# ---------------------------------------------------------------------- reading one folder
def read_metrics(folder: Path) -> pd.DataFrame | None:
    """A version folder's metrics.csv, or None when it has none (or it cannot be parsed)."""
    path = folder / "metrics.csv"
    if not path.is_file():
        return None
    try:
        frame = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, OSError):
        return None
    return frame if "step" in frame.columns else None


def series_kinds(metrics: pd.DataFrame) -> dict[str, str]:
    """Each metric column's kind: 'step' (a value per logged step) or 'epoch' (one per epoch).

    `NAME_step` / `NAME_epoch` say it themselves. A bare name is a step series when it shares its
    rows with `*_step` values, or appears more than once in an epoch; validation and test metrics
    are epoch series however often validation runs.
    """
    columns = [c for c in metrics.columns if c not in ("epoch", "step")]
    suffixed = [c for c in columns if c.endswith("_step")]
    step_rows = metrics[suffixed].notna().any(axis=1) if suffixed else None
    kinds = {}
    for column in columns:
        present = metrics[column].notna()
        if column.endswith("_step"):
            kind = "step"
        elif column.endswith("_epoch") or column.startswith(("valid", "val_", "val/", "test")):
            kind = "epoch"
        elif step_rows is not None and (present & step_rows).sum() * 2 > present.sum():
            kind = "step"
        elif "epoch" not in metrics.columns:
            kind = "step"
        else:
            per_epoch = metrics.loc[present, "epoch"].value_counts()
            kind = "step" if (per_epoch > 1).any() else "epoch"
        kinds[column] = kind
    return kinds


def metric_name(column: str) -> str:
    """The name a user logged: `train_loss_epoch` -> `train_loss` (in the table's columns)."""
    return column[: -len("_epoch")] if column.endswith("_epoch") else column


def read_config(folder: Path) -> tuple[dict[str, Any] | None, str | None]:
    """config.yaml of a CLI run and the command named in its header (`# ltrain fit ...`)."""
    try:
        text = (folder / "config.yaml").read_text(encoding="utf-8")
        config = yaml.safe_load(text)
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None, None
    first = text.splitlines()[0] if text else ""
    words = first.lstrip("# ").split()
    command = words[1] if len(words) > 1 and words[0] in ("ltrain", "__main__.py") else None
    return (config if isinstance(config, dict) else None), command


def config_monitor(config: Mapping[str, Any] | None) -> tuple[str | None, str]:
    """The metric a config's ModelCheckpoint (else EarlyStopping) monitors, and its mode."""
    trainer = (config or {}).get("trainer")
    callbacks = trainer.get("callbacks") if isinstance(trainer, Mapping) else None
    if isinstance(callbacks, Mapping):
        callbacks = [callbacks]
    for wanted in ("ModelCheckpoint", "EarlyStopping"):
        for spec in callbacks if isinstance(callbacks, list) else []:
            if not isinstance(spec, Mapping):
                continue
            if str(spec.get("class_path", "")).rsplit(".", 1)[-1] != wanted:
                continue
            args = spec.get("init_args") or {}
            if isinstance(args, Mapping) and isinstance(args.get("monitor"), str):
                mode = args.get("mode")
                return args["monitor"], mode if mode in ("min", "max") else "min"
    return None, "min"


def flatten_config(config: Mapping[str, Any] | None) -> dict[str, Any]:
    """Dotted keys as `--set` spells them (no `init_args`), class paths as their class name."""
    flat: dict[str, Any] = {}

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, Mapping):
            for key, value in node.items():
                if key == "init_args":
                    walk(value, prefix)
                else:
                    walk(value, f"{prefix}.{key}" if prefix else str(key))
        elif isinstance(node, list) and any(isinstance(v, (Mapping, list)) for v in node):
            for i, value in enumerate(node):
                walk(value, f"{prefix}.{i}")
        elif prefix.endswith("class_path") and isinstance(node, str):
            flat[prefix] = node.rsplit(".", 1)[-1]
        else:
            flat[prefix] = node

    walk(config or {}, "")
    return flat


def config_changes(before: Mapping[str, Any], after: Mapping[str, Any]) -> str:
    """`model.lr: 0.001→0.0003, ...`: the flattened keys whose values differ."""
    missing = object()
    keys = [*after, *(k for k in before if k not in after)]
    changed = []
    for key in keys:
        old, new = before.get(key, missing), after.get(key, missing)
        if old != new or type(old) is not type(new):
            changed.append(f"{key}: {_value_text(old, missing)}→{_value_text(new, missing)}")
    return ", ".join(changed)


def _value_text(value: Any, missing: object) -> str:
    if value is missing:
        return "∅"
    if value is None or isinstance(value, (bool, list, dict)):
        return json.dumps(value, separators=(",", ":"), default=str)
    return repr(value) if isinstance(value, float) else str(value)


def _previous_folder(folder: Path) -> Path | None:
    number = version_number(folder)
    if number is None:
        return None
    earlier = [n for n in existing_versions(folder.parent) if n < number]
    return folder.parent / f"version_{earlier[-1]}" if earlier else None


def _elapsed(run: Mapping[str, Any], until: float) -> float | None:
    try:
        started = datetime.fromisoformat(run["started"]).timestamp()
    except (KeyError, TypeError, ValueError):
        return None
    return max(until - started, 0.0)


def _duration(run: Mapping[str, Any], state: str, folder: Path) -> float | None:
    """Seconds the run took, summed over its resumed segments; a died run's ends at its last write."""
    earlier = [r.get("duration_s") for r in run.get("previous") or [] if isinstance(r, Mapping)]
    total = sum(d for d in earlier if isinstance(d, (int, float)))
    own = run.get("duration_s")
    if state == "running":
        own = _elapsed(run, time.time())
    elif state == "died":
        newest = max((p.stat().st_mtime for p in folder.rglob("*") if p.is_file()), default=0.0)
        own = _elapsed(run, newest)
    return total + own if isinstance(own, (int, float)) else None


def _last_epoch_values(metrics: pd.DataFrame) -> tuple[dict[str, float], int | None]:
    """Each epoch metric's last value, and how many epochs the rows cover."""
    last: dict[str, float] = {}
    epochs_logged = None
    for column, kind in series_kinds(metrics).items():
        values = metrics[column].dropna()
        if kind == "epoch" and len(values):
            last[metric_name(column)] = float(values.iloc[-1])
            top = metrics.loc[values.index, "epoch"].max() if "epoch" in metrics else None
            if top is not None and not math.isnan(top):
                epochs_logged = max(epochs_logged or 0, int(top) + 1)
    return last, epochs_logged


def read_row(folder: Path) -> tuple[dict[str, Any], dict[str, float], dict[str, Any]]:
    """One folder's fixed columns, its last epoch values and its flattened config."""
    run = read_run(folder) or {}
    config, header_command = read_config(folder)
    metrics = read_metrics(folder)
    last, epochs_logged = _last_epoch_values(metrics) if metrics is not None else ({}, None)

    monitor, mode = config_monitor(config)
    if run.get("monitor"):
        monitor, mode = str(run["monitor"]), str(run.get("mode") or mode)
    best = run.get("best_model_score") if run.get("monitor") == monitor else None
    if best is None and monitor is not None and metrics is not None:
        column = next((c for c in (monitor, f"{monitor}_epoch") if c in metrics.columns), None)
        values = metrics[column].dropna() if column else pd.Series(dtype=float)
        if len(values):
            best = float(values.max() if mode == "max" else values.min())

    state = str(run["state"]) if run.get("state") in STATES else "unknown"
    if state == "running" and process_alive(run) is False:
        state = "died"
    command = run.get("command") or header_command or ""
    epochs = run.get("epochs") if state in ("finished", "failed", "interrupted", "pruned") else None
    if epochs is None:
        epochs = epochs_logged
    if command not in ("fit", ""):
        epochs = None  # validate/test rows carry the checkpoint's epoch, not epochs trained here
    if not run:
        trainer = (config or {}).get("trainer") if isinstance(config, Mapping) else None
        max_epochs = trainer.get("max_epochs") if isinstance(trainer, Mapping) else None
        if isinstance(max_epochs, int) and max_epochs > 0 and (epochs or 0) >= max_epochs:
            state = "finished"
    git = run["git"] if isinstance(run.get("git"), Mapping) else {}
    row = {
        "name": folder.parent.name,
        "version": version_number(folder),
        "command": command,
        "state": state,
        "started": run.get("started"),
        "duration_s": _duration(run, state, folder) if run else None,
        "epochs": epochs,
        "global_step": run.get("global_step"),
        "monitor": monitor,
        "mode": mode if monitor else None,
        "best": best,
        "best_checkpoint": run.get("best_model_path"),
        "message": run.get("message"),
        "device": run.get("device"),
        "precision": run.get("precision"),
        "git_commit": git.get("commit"),
        "command_line": run.get("command_line"),
        "path": str(folder),
    }
    return row, last, flatten_config(config) if config is not None else {}


# ---------------------------------------------------------------------- the table
def runs_frame(folders: Sequence[Path], keys: Sequence[str] = ()) -> pd.DataFrame:
    """The table of `folders`: fixed columns, `keys` (config values, e.g. a sweep's), last epoch
    metrics, then what changed since the previous version of the same name."""
    keys = [k for k in keys if k not in (*FIXED, *TRAILING)]
    rows, metric_columns = [], []
    configs: dict[Path, dict[str, Any]] = {}
    for folder in folders:
        row, last, flat = read_row(folder)
        configs[folder] = flat
        for key in keys:
            row[key] = flat.get(_normal_key(key))
        for name, value in last.items():
            column = name if name not in row else f"last_{name}"
            row[column] = value
            if column not in metric_columns:
                metric_columns.append(column)
        rows.append(row)
    for row, folder in zip(rows, folders, strict=True):
        previous = _previous_folder(folder)
        if previous is None or not configs[folder]:
            row["changes"] = ""
            continue
        before = configs.get(previous)
        if before is None:
            before = read_config(previous)[0]
            before = flatten_config(before) if before is not None else None
        row["changes"] = config_changes(before, configs[folder]) if before else ""
    order = [*FIXED, *keys, *_metric_order(metric_columns, rows), *TRAILING]
    frame = pd.DataFrame(rows, columns=order)
    for column in ("version", "epochs", "global_step"):
        frame[column] = frame[column].astype("Int64")  # counts stay integers beside missing ones
    return frame


def _normal_key(key: str) -> str:
    return ".".join(part for part in key.split(".") if part != "init_args")


def _metric_order(columns: list[str], rows: list[dict[str, Any]]) -> list[str]:
    """The monitored metric first, then validation, training, test and other metrics."""
    monitors = {r["monitor"] for r in rows if r.get("monitor")}

    def rank(column: str) -> tuple[int, str]:
        if column in monitors:
            return 0, column
        for i, prefix in enumerate(("val", "train", "test"), start=1):
            if column.startswith(prefix):
                return i, column
        return 4, column

    return sorted(columns, key=rank)


def sort_frame(frame: pd.DataFrame, key: str | None) -> pd.DataFrame:
    """Sort by a column; a metric some run monitors in mode 'max' sorts best first; `-KEY` reverses.

    Runs without a value go last.
    """
    if key is None:
        return frame.sort_values(["name", "version"], kind="stable", ignore_index=True)
    reverse = key.startswith("-")
    column = SORT_ALIASES.get(key.lstrip("-"), key.lstrip("-"))
    if column not in frame.columns:
        metrics = [c for c in frame.columns if c not in (*FIXED, *TRAILING)]
        valid = ", ".join(["name", "version", "state", "epochs", "duration", "best", *metrics])
        raise MisconfigurationException(f"--sort {key}: no such column; valid: {valid}")
    monitored = frame[frame["monitor"] == column] if column != "best" else frame
    modes = set(monitored["mode"].dropna())
    descending = modes == {"max"} if column not in FIXED or column == "best" else False
    return frame.sort_values(
        column,
        ascending=descending == reverse,
        na_position="last",
        kind="stable",
        ignore_index=True,
    )


def to_csv(frame: pd.DataFrame) -> str:
    return frame.to_csv(index=False)


# ---------------------------------------------------------------------- the terminal view
def render(frame: pd.DataFrame, width: int | None = None, keys: Sequence[str] = ()) -> str:
    """The table cut to `width` columns: run, state, epochs, time, best, `keys`, then the metrics
    that fit in priority order, leaving room for the config changes (truncated with '…').

    With one monitored metric, a caption line above the table names it.
    """
    if width is None:
        width = shutil.get_terminal_size((80, 24)).columns
    keys = [k for k in keys if k in frame.columns and k not in (*FIXED, *TRAILING)]
    monitors = set(frame["monitor"].dropna())
    caption = []
    columns: list[tuple[str, list[str], bool]] = [
        ("name", [_cut(n, 20) for n in frame["name"]], False),
        ("v", [str(v) for v in frame["version"]], True),
    ]
    if set(frame["command"].dropna()) - {"fit", ""}:
        columns.append(("cmd", [_cell(c) for c in frame["command"]], False))
    columns += [
        ("state", list(frame["state"]), False),
        ("ep", [_number(v) for v in frame["epochs"]], True),
        ("time", [_duration_text(v) for v in frame["duration_s"]], True),
    ]
    if len(monitors) == 1:
        modes = set(frame["mode"].dropna())
        best = {"min": "lowest", "max": "highest"}.get(modes.pop()) if len(modes) == 1 else None
        caption = [f"best: {best or 'best'} {next(iter(monitors))}"]
        columns.append(("best", [_number(v) for v in frame["best"]], True))
    elif monitors:
        columns.append(("monitor", [_cell(m) for m in frame["monitor"]], False))
        columns.append(("best", [_number(v) for v in frame["best"]], True))
    for key in keys:
        header = _short_key(key, keys)
        columns.append((header, [_cut(_cell(v), 16) for v in frame[key]], True))

    def used(chosen: list[tuple[str, list[str], bool]]) -> int:
        return sum(_width(c) for c in chosen) + 2 * (len(chosen) - 1)

    changes = [_cell(c) for c in frame["changes"]] if not keys else []
    reserve = min(max(map(len, changes), default=0), 24)
    reserve = reserve + 2 if reserve else 0
    metrics = [c for c in frame.columns if c not in (*FIXED, *TRAILING, *keys)]
    for metric in metrics:
        column = (metric, [_number(v) for v in frame[metric]], True)
        if used(columns) + 2 + _width(column) + reserve > width:
            break
        columns.append(column)
    for header, cells in (("changes", changes), ("message", [_cell(m) for m in frame["message"]])):
        room = width - used(columns) - 2
        if any(cells) and room >= max(len(header), 12):
            columns.append((header, [_cut(c, room) for c in cells], False))

    lines = caption
    for i in range(-1, len(frame)):
        parts = []
        for header, cells, right in columns:
            text = header if i < 0 else cells[i]
            size = _width((header, cells, right))
            parts.append(text.rjust(size) if right else text.ljust(size))
        lines.append("  ".join(parts).rstrip())
    return "\n".join(lines)


def _short_key(key: str, keys: Sequence[str]) -> str:
    """A long dotted key as its shortest tail that no other key ends with: `…callbacks.1.step`."""
    if len(key) <= 16:
        return key
    parts = key.split(".")
    for start in range(len(parts) - 1, 0, -1):
        tail = ".".join(parts[start:])
        if not any(k != key and (k == tail or k.endswith("." + tail)) for k in keys):
            return "…" + tail
    return key


def _width(column: tuple[str, list[str], bool]) -> int:
    header, cells, _ = column
    return max([len(header), *map(len, cells)])


def _cut(text: str, size: int) -> str:
    return text if len(text) <= size else text[: max(size - 1, 0)] + "…"


def _is_missing(value: Any) -> bool:
    return value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value))


def _number(value: Any) -> str:
    if _is_missing(value):
        return ""
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e6:
        return str(int(value))
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _cell(value: Any) -> str:
    if _is_missing(value):
        return ""
    return _number(value) if isinstance(value, float) else str(value)


def _duration_text(seconds: Any) -> str:
    if _is_missing(seconds):
        return ""
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
