"""The `ltrain` command line: thin click commands over config.py, experiment.py and the runs table.

Start-up stays fast: torch is imported inside command bodies, never at module level. Each command
runs its body through `errors.guard`, which turns an error about the user's input into one line on
stderr and exit code 2.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

import click

from ltrain import __version__
from ltrain.app.config import LTRAIN, header_line, lightning_view, load, to_yaml
from ltrain.app.errors import CommandError, guard, resume_command
from ltrain.app.sources import Sources, parse_arguments

SET_HELP = (
    "Override a config value, e.g. --set trainer.max_epochs=3 --set model.lr=3e-4 (repeatable)."
)


LIGHTNING_HELP = """
\b
LightningCLI's arguments work too, applied in the order typed, before --set:
  --config FILE            a config file; several merge as LightningCLI merges them
  --KEY=VALUE, --KEY VALUE e.g. --trainer.max_epochs=3 --model.lr 1e-3 --data.batch_size 64
  --KEY+=VALUE             append to a list: --trainer.callbacks+=EarlyStopping
  --print_config           print the config as LightningCLI prints it, and stop
"""


def _complete_set_keys(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[Any]:
    """Dotted keys of the config given on the command line, plus the Trainer's arguments."""
    from click.shell_completion import CompletionItem

    from ltrain.app.config import config_keys

    # while completing, click's resilient parsing leaves the arguments in ctx.args
    words = [*ctx.params.get("arguments", ()), *ctx.args]
    config = next((a for a in words if a.endswith((".yaml", ".yml"))), None)
    return [CompletionItem(k + "=") for k in config_keys(config) if k.startswith(incomplete)]


def set_option(function: Any) -> Any:
    return click.option(
        "--set",
        "overrides",
        multiple=True,
        metavar="KEY=VALUE",
        help=SET_HELP,
        shell_complete=_complete_set_keys,
    )(function)


# CONFIG and LightningCLI's arguments, in the order typed: click passes them through unparsed
config_arguments = click.argument(
    "arguments",
    nargs=-1,
    type=click.UNPROCESSED,
    metavar="[CONFIG] [--config FILE] [--KEY=VALUE]...",
)
TAKES_ARGUMENTS = {"ignore_unknown_options": True}


def sources_of(arguments: tuple[str, ...], overrides: tuple[str, ...], command: str) -> Sources:
    """The config's sources; `--print_config` prints LightningCLI's view and exits here."""
    sources = guard(parse_arguments, arguments, overrides)
    if sources.print_config is not None:
        if command not in ("fit", "validate", "test", "predict"):
            raise CommandError(
                f"--print_config: `ltrain {command}` has no LightningCLI form; "
                "`ltrain config` prints ltrain's view of a config"
            )
        if not sources.files:
            raise CommandError("--print_config needs a CONFIG file or --config FILE")
        guard(_print_config, sources, command)
        sys.exit(0)
    return sources


def _print_config(sources: Sources, command: str) -> None:
    layout = LTRAIN.for_command(command)
    resolved, _ = load(sources, layout)
    view = lightning_view(
        resolved.config, layout, skip_null="skip_null" in (sources.print_config or ())
    )
    click.echo(to_yaml(view, header_line()), nl=False)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="ltrain")
def main() -> None:
    """ltrain: train PyTorch models with Lightning's API from YAML configs.

    \b
    ltrain fit configs/digits.yaml --set trainer.max_epochs=3
    ltrain test --ckpt runs/digits-mlp/version_0
    ltrain predict --ckpt runs/digits-mlp/version_0/checkpoints/last.ckpt
    ltrain search configs/digits.yaml --space 'model.lr=loguniform(1e-4,1e-1)' --trials 20
    ltrain runs
    ltrain plot runs/digits-mlp
    """


@main.command(context_settings=TAKES_ARGUMENTS, epilog=LIGHTNING_HELP)
@config_arguments
@set_option
@click.option(
    "--resume",
    metavar="PATH|last",
    help="Continue from a checkpoint (or 'last') in its version folder.",
)
@click.option(
    "--multirun",
    is_flag=True,
    help="Sweep: one run per combination of comma-separated --set values, one after another.",
)
def fit(
    arguments: tuple[str, ...], overrides: tuple[str, ...], resume: str | None, multirun: bool
) -> None:
    """Train the model a CONFIG describes.

    \b
    Example:
      ltrain fit configs/digits.yaml --set trainer.max_epochs=3 --set model.lr=3e-4
      ltrain fit configs/digits.yaml --set model.lr=1e-3,3e-4 --set seed=0,1 --multirun
      ltrain fit --config base.yaml --config exp.yaml --trainer.max_epochs=3
    """
    sources = sources_of(arguments, overrides, "fit")
    if not sources.files:
        raise CommandError(
            "fit needs a CONFIG file (or --config FILE), e.g. ltrain fit configs/digits.yaml"
        )
    from ltrain.app.experiment import run_command
    from ltrain.app.sweeps import is_value_list, run_sweep
    from ltrain.errors import RunInterrupted

    if multirun:
        if resume is not None:
            raise CommandError("--multirun starts new runs; it cannot be combined with --resume")
        code = guard(run_sweep, sources)
        if code:
            sys.exit(code)
        return
    try:
        guard(run_command, "fit", sources, ckpt=resume)
    except RunInterrupted as stop:
        if os.environ.get("RANK", "0") == "0":  # one line, from rank 0 of a data-parallel run
            click.echo(f"Resume with: {resume_command(sources, stop)}", err=True)
        sys.exit(128 + stop.signum)
    except CommandError as error:
        if type(error) is CommandError and any(is_value_list(o) for o in overrides):
            hint = "; to run one fit per comma-separated value, add --multirun"
            raise CommandError(error.message + hint) from None
        raise


@main.command(context_settings=TAKES_ARGUMENTS, epilog=LIGHTNING_HELP)
@config_arguments
@set_option
@click.option("--ckpt", metavar="PATH", help="Checkpoint file or version folder to load first.")
def validate(arguments: tuple[str, ...], overrides: tuple[str, ...], ckpt: str | None) -> None:
    """Run one validation epoch.

    \b
    Example:
      ltrain validate configs/digits.yaml --ckpt runs/digits-mlp/version_0
    """
    sources = sources_of(arguments, overrides, "validate")
    if not sources.files and ckpt is None:
        raise CommandError("validate needs a CONFIG or --ckpt PATH")
    from ltrain.app.experiment import run_command

    guard(run_command, "validate", sources, ckpt=ckpt)


@main.command(context_settings=TAKES_ARGUMENTS, epilog=LIGHTNING_HELP)
@config_arguments
@set_option
@click.option(
    "--ckpt", metavar="PATH", help="Checkpoint file or version folder (its best checkpoint)."
)
def test(arguments: tuple[str, ...], overrides: tuple[str, ...], ckpt: str | None) -> None:
    """Run the test set through a trained checkpoint.

    Without CONFIG, the config is the one stored in the checkpoint.

    \b
    Example:
      ltrain test --ckpt runs/digits-mlp/version_0
    """
    sources = sources_of(arguments, overrides, "test")
    if ckpt is None and not sources.files:
        raise CommandError("test needs --ckpt PATH (a checkpoint file or a version folder)")
    from ltrain.app.experiment import run_command

    guard(run_command, "test", sources, ckpt=ckpt)


@main.command(context_settings=TAKES_ARGUMENTS, epilog=LIGHTNING_HELP)
@config_arguments
@set_option
@click.option(
    "--ckpt", metavar="PATH", help="Checkpoint file or version folder (its best checkpoint)."
)
@click.option(
    "--out", type=click.Path(dir_okay=False), help="Where to write predictions (.csv or .pt)."
)
def predict(
    arguments: tuple[str, ...], overrides: tuple[str, ...], ckpt: str | None, out: str | None
) -> None:
    """Write the model's predictions for the predict set.

    \b
    Example:
      ltrain predict --ckpt runs/digits-mlp/version_0/checkpoints/last.ckpt --out preds.csv
    """
    sources = sources_of(arguments, overrides, "predict")
    if ckpt is None and not sources.files:
        raise CommandError("predict needs --ckpt PATH (a checkpoint file or a version folder)")
    from ltrain.app.experiment import run_command

    guard(run_command, "predict", sources, ckpt=ckpt, out=out)


@main.command(name="lr-find", context_settings=TAKES_ARGUMENTS)
@config_arguments
@set_option
@click.option(
    "--min-lr", type=float, default=1e-8, show_default=True, help="First rate of the sweep."
)
@click.option(
    "--max-lr", type=float, default=1.0, show_default=True, help="Last rate of the sweep."
)
@click.option(
    "--num-training", type=int, default=100, show_default=True, help="Steps in the sweep."
)
@click.option(
    "--apply", is_flag=True, help="Write CONFIG's copy <name>.lr-find.yaml with the suggested lr."
)
def lr_find(
    arguments: tuple[str, ...],
    overrides: tuple[str, ...],
    min_lr: float,
    max_lr: float,
    num_training: int,
    apply: bool,
) -> None:
    """Sweep the learning rate and suggest one (lr_find.csv and lr_find.png in the run folder).

    \b
    Example:
      ltrain lr-find configs/digits.yaml --apply
      ltrain fit configs/digits.lr-find.yaml
    """
    sources = sources_of(arguments, overrides, "lr-find")
    if not sources.files:
        raise CommandError("lr-find needs a CONFIG file, e.g. ltrain lr-find configs/digits.yaml")
    from ltrain.app.experiment import run_command

    options = {"min_lr": min_lr, "max_lr": max_lr, "num_training": num_training}
    guard(run_command, "lr-find", sources, lr_find=options, apply=apply)


SPACE_HELP = (
    "What to try for a key: loguniform(LOW,HIGH), uniform(LOW,HIGH), int(LOW,HIGH[,STEP]), "
    "choice(A,B,...) or A,B,... (repeatable)."
)


@main.command(context_settings=TAKES_ARGUMENTS)
@config_arguments
@set_option
@click.option(
    "--space",
    "spaces",
    multiple=True,
    metavar="KEY=SPEC",
    help=SPACE_HELP,
    shell_complete=_complete_set_keys,
)
@click.option("--metric", help="The metric to optimize [default: the config's monitored one].")
@click.option("--direction", metavar="maximize|minimize", help="[default: the monitor's mode]")
@click.option("--trials", type=int, help="Trials in the study, all processes together [20].")
@click.option(
    "--jobs",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Trials at once, each in a process of its own.",
)
@click.option(
    "--sampler",
    metavar="auto|gp|tpe|random|grid|cmaes",
    help="[default: auto: gp for up to 100 trials without a pruner, else tpe]",
)
@click.option("--pruner", metavar="median|hyperband|none", help="[default: median]")
@click.option("--storage", metavar="URL", help="Optuna storage [sqlite:///runs/NAME/search.db].")
@click.option("--study", metavar="NAME", help="The study's name [the config's name].")
@click.option(
    "--timeout",
    metavar="DURATION",
    help="Start no new trial after this long (each process runs one at least): 90s, 30m, 2h.",
)
@click.option(
    "--show", metavar="STUDY", help="Print a study's trials and best trial again, and stop."
)
@click.option("--worker", hidden=True)
def search(
    arguments: tuple[str, ...],
    overrides: tuple[str, ...],
    spaces: tuple[str, ...],
    jobs: int,
    timeout: str | None,
    show: str | None,
    worker: str | None,
    **options: Any,
) -> None:
    """Search hyperparameters with Optuna: every trial is a run of CONFIG.

    \b
    Example:
      ltrain search configs/digits.yaml --space 'model.lr=loguniform(1e-4,1e-1)' \\
          --space 'data.batch_size=choice(32,64,128)' --trials 40 --jobs 2
      ltrain search --show digits-mlp
    """
    try:
        import optuna  # noqa: F401
    except ImportError:
        raise CommandError(
            "ltrain search runs on Optuna, which is not installed: pip install 'ltrain[search]'"
        ) from None
    from ltrain.app import search as searching
    from ltrain.app import search_workers

    if show is not None:
        from ltrain.app.search_report import show_study

        guard(show_study, show, options["storage"])
        return
    sources = sources_of(arguments, overrides, "search")
    if not sources.files:
        raise CommandError("search needs a CONFIG file, e.g. ltrain search configs/digits.yaml")
    settings = guard(searching.settings_for, sources, {**options, "spaces": spaces})
    if worker is not None:
        role = json.loads(worker)
        search_workers.watch_parent(role["parent"])
        guard(searching.work, settings, sources, role["index"], role["deadline"], create=False)
        return
    if settings.sampler == "gp" and settings.pruner != "none":
        click.echo(
            "warning: --sampler gp learns from finished trials only; beside --pruner "
            f"{settings.pruner} it may propose pruned points again (add --pruner none)",
            err=True,
        )
    deadline = time.time() + guard(searching.timeout_seconds, timeout) if timeout else None
    study = guard(searching.open_study, settings)
    try:
        if jobs == 1:
            guard(searching.work, settings, sources, 0, deadline)
        else:
            guard(search_workers.run_workers, settings, jobs, deadline)
    except KeyboardInterrupt:
        from ltrain.run_record import command_line

        click.echo(f"Search stopped; continue it with: {command_line()}", err=True)
        sys.exit(130)
    from ltrain.app.search_report import report

    if not guard(report, study, settings.storage):
        sys.exit(1)  # every trial failed (or was pruned): the table says why


@main.command(name="config", context_settings=TAKES_ARGUMENTS)
@config_arguments
@set_option
def show_config(arguments: tuple[str, ...], overrides: tuple[str, ...]) -> None:
    """Print the resolved config (defaults filled, overrides applied) as YAML: ltrain's view.

    \b
    Example:
      ltrain config configs/digits.yaml --set trainer.max_epochs=3 > resolved.yaml
      ltrain config --config base.yaml --config exp.yaml --trainer.max_epochs=3
    """
    sources = sources_of(arguments, overrides, "config")
    if not sources.files:
        raise CommandError("config needs a CONFIG file, e.g. ltrain config configs/digits.yaml")

    def show() -> None:
        resolved, _ = load(sources)
        header = ""
        if resolved.unchecked:
            header = "not checked (passed through **kwargs): " + ", ".join(resolved.unchecked)
        click.echo(to_yaml(resolved.config, header), nl=False)

    guard(show)


@main.command(name="runs")
@click.argument("root", default="runs", required=False, type=click.Path(path_type=str))
@click.option("--name", metavar="NAME", help="Only the runs of this name (a pattern: 'digits*').")
@click.option(
    "--sort",
    metavar="METRIC",
    help="Sort by a column: a metric (best first when monitored), duration, epochs, ...; "
    "-METRIC reverses.",
)
@click.option("--study", metavar="STUDY", help="Only the trials of this `ltrain search` study.")
@click.option("--csv", "as_csv", is_flag=True, help="Print every column as CSV.")
def list_runs(
    root: str, name: str | None, sort: str | None, study: str | None, as_csv: bool
) -> None:
    """Show every run under ROOT (default: runs) as one table.

    State, epochs, duration, best monitored value, last epoch metrics, and what changed in the
    config since the previous version of the same name.

    \b
    Example:
      ltrain runs --name digits-mlp --sort valid_acc
      ltrain runs runs --csv > runs.csv
      ltrain runs --study digits-mlp --sort valid_acc
    """

    def show() -> None:
        from ltrain.app.runs_table import (
            render,
            runs_frame,
            searched_keys,
            sort_frame,
            to_csv,
            version_folders,
        )

        folders = version_folders(root, name, study)
        if not folders:
            click.echo(f"No runs under {root}", err=True)
            return
        keys = searched_keys(folders) if study else []
        frame = sort_frame(runs_frame(folders, keys=keys), sort)
        click.echo(to_csv(frame) if as_csv else render(frame, keys=keys), nl=not as_csv)

    guard(show)


@main.command(name="plot")
@click.argument("targets", nargs=-1, required=True, metavar="RUN_OR_VERSION...")
@click.option(
    "--metric",
    "metrics",
    multiple=True,
    metavar="NAME",
    help="Only this metric: an axes name (loss) or a logged name (valid_loss). Repeatable.",
)
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=str),
    help="Image to write (.png, .svg, .pdf); default: plot.png in the first version folder.",
)
def plot_command(targets: tuple[str, ...], metrics: tuple[str, ...], out: str | None) -> None:
    """Plot the metrics of runs (runs/NAME: its latest version) or version folders.

    Step values are lines and epoch values markers, against the step; train and valid values of
    one metric share an axes; several runs are overlaid.

    \b
    Example:
      ltrain plot runs/digits-mlp
      ltrain plot runs/digits-mlp/version_0 runs/digits-mlp/version_1 --metric loss --out cmp.png
    """

    def draw() -> None:
        from ltrain.app.plots import plot_runs

        _, path = plot_runs(targets, metrics, out)
        click.echo(str(path))

    guard(draw)
