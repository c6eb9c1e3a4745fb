"""What a search found: its trials best first, the best one as a command and a config, plots.

`ltrain search` prints this when it ends and `ltrain search --show STUDY` prints it again; both
read the study from its storage only, so the report is the same from any machine that shares it.
"""

from __future__ import annotations

import shlex
import shutil
import warnings
from pathlib import Path
from typing import Any

import click
import pandas as pd

from ltrain.app.errors import ConfigError

STATE_NAMES = {
    "COMPLETE": "complete",
    "PRUNED": "pruned",
    "FAIL": "failed",
    "RUNNING": "running",
    "WAITING": "waiting",
}


def trials_frame(study: Any) -> pd.DataFrame:
    """One row per trial that counts: complete ones best first, then pruned, failed, the rest."""
    from ltrain.app.search import live_trials

    recorded = study.user_attrs.get("ltrain", {})
    metric = recorded.get("metric", "value")
    keys = list(recorded.get("space", {}))
    maximize = recorded.get("direction") == "maximize"
    rows = []
    for trial in live_trials(study):
        state = STATE_NAMES.get(trial.state.name, trial.state.name.lower())
        steps = trial.intermediate_values
        if trial.value is not None:
            value = trial.value
        elif steps:  # a pruned trial: its best reported value
            value = max(steps.values()) if maximize else min(steps.values())
        else:
            value = None
        ended = trial.datetime_complete
        started = trial.datetime_start
        rows.append(
            {
                "trial": trial.number,
                "state": state,
                metric: value,
                "validations": len(steps),
                **{key: trial.params.get(key) for key in keys},
                "duration_s": (ended - started).total_seconds() if ended and started else None,
                "folder": trial.user_attrs.get("folder") or "",
                "error": trial.user_attrs.get("error") or "",
            }
        )
    frame = pd.DataFrame(
        rows,
        columns=["trial", "state", metric, "validations", *keys, "duration_s", "folder", "error"],
    )
    order = {"complete": 0, "pruned": 1, "failed": 2}
    frame["_group"] = frame["state"].map(lambda s: order.get(s, 3))
    frame[metric] = pd.to_numeric(frame[metric])  # all-None when no trial reported a value
    frame["_value"] = -frame[metric] if maximize else frame[metric]
    frame = frame.sort_values(["_group", "_value", "trial"], na_position="last", kind="stable")
    return frame.drop(columns=["_group", "_value"]).reset_index(drop=True)


def report(study: Any, storage: str) -> bool:
    """Print the trials table and the best trial; write its config and the plots next to the
    study. Returns whether there is a best trial (some trial finished)."""
    frame = trials_frame(study)
    counts = frame["state"].value_counts()
    summary = ", ".join(
        f"{counts[s]} {s}"
        for s in ("complete", "pruned", "failed", "running", "waiting")
        if s in counts
    )
    click.echo(
        f"\nStudy {study.study_name} ({storage}): {len(frame)} trials, {summary or 'none yet'}"
    )
    if len(frame):
        shown = frame.drop(columns=["error"]) if not frame["error"].any() else frame
        click.echo(shown.to_string(index=False, na_rep="", float_format=lambda v: f"{v:.6g}"))
    outputs = Path(study.user_attrs.get("outputs", "."))
    best = _best(study)
    if best is None:
        click.echo("No trial has finished yet: no best trial.")
        return False
    metric = study.user_attrs.get("ltrain", {}).get("metric", "value")
    folder = best.user_attrs.get("folder")
    click.echo(f"\nBest trial {best.number}: {metric}={best.value:.6g}  ({folder})")
    words = [*study.user_attrs.get("fit_words", [])]
    for override in best.user_attrs.get("overrides", []):
        words += ["--set", override]
    click.echo("Run it again: " + " ".join(["ltrain fit", *(shlex.quote(w) for w in words)]))
    if folder and (Path(folder) / "config.yaml").is_file():
        config = outputs / f"{study.study_name}.best.yaml"
        outputs.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(Path(folder) / "config.yaml", config)
        click.echo(f"Its config: {config}  (ltrain fit {config})")
    for line in write_plots(study, outputs):
        click.echo(line)
    return True


def _best(study: Any) -> Any:
    try:
        return study.best_trial
    except ValueError:  # no complete trial
        return None


def write_plots(study: Any, outputs: Path) -> list[str]:
    """Optuna's optimization history and parameter importances, drawn with matplotlib."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as optuna_plots

    metric = study.user_attrs.get("ltrain", {}).get("metric", "value")
    lines = []
    for kind, draw in (
        ("history", optuna_plots.plot_optimization_history),
        ("importances", optuna_plots.plot_param_importances),
    ):
        path = outputs / f"{study.study_name}.{kind}.png"
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                figure = draw(study, target_name=metric).get_figure(root=True)
            assert figure is not None  # Optuna draws on a figure of its own
            too_few = [w for w in caught if "too small" in str(w.message)]
            if too_few:  # Optuna's importances of a few trials would all be equal
                plt.close(figure)
                raise ValueError(str(too_few[0].message))
            figure.savefig(path, dpi=110, bbox_inches="tight")
            plt.close(figure)
        except (ValueError, RuntimeError, ZeroDivisionError) as error:
            why = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            lines.append(f"Plot of {kind}: not drawn ({why})")
            continue
        lines.append(f"Plot of {kind}: {path}")
    return lines


def find_storage(study_name: str, storage: str | None, root: str = "runs") -> str:
    """The storage holding `study_name`: the one given, else the SQLite file under `root` that
    has a study of that name."""
    import optuna

    if storage:
        candidates = [storage]
    else:
        candidates = [f"sqlite:///{path}" for path in sorted(Path(root).glob("*/search.db"))]
    from ltrain.app.search import storage_for

    for url in candidates:
        if study_name in optuna.get_all_study_names(storage=storage_for(url)):
            return url
    where = storage or f"{root}/*/search.db"
    raise ConfigError(f"--show {study_name}: no study of that name in {where}; pass --storage URL")


def show_study(study_name: str, storage: str | None) -> None:
    import optuna

    from ltrain.app.search import storage_for

    url = find_storage(study_name, storage)
    study = optuna.load_study(study_name=study_name, storage=storage_for(url))
    report(study, url)
