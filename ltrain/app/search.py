"""`ltrain search`: hyperparameter search on Optuna, every trial an ordinary run.

The study lives in Optuna's RDB storage (SQLite by default, `runs/<name>/search.db`; any
SQLAlchemy URL when a search spans machines), and that storage is the only shared state: each
worker loops "ask a trial, fit it, tell the result" against it, so `--jobs N` processes, a second
machine with the same `--storage`/`--study`, or the same command after a kill all share one study.

Exactly `--trials` trials run, whoever runs them. A trial counts when it is running, waiting,
finished, pruned or failed; a trial whose process died (its heartbeat stopped) or that Ctrl-C
stopped is failed and re-queued with its parameters (Optuna's retry), and the re-run takes its
place. A worker that asks for a trial when the budget is already spent (two workers asking at the
same instant) marks that extra trial `surplus` and never runs it; reports leave such trials out.

A trial's value is the best value of the metric over its validations (as ModelCheckpoint keeps
the best model), reported to Optuna after each validation so the pruner can stop it; a pruned
trial ends cleanly and its run.json says `pruned`.
"""

from __future__ import annotations

import re
import shlex
import threading
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ltrain.app.errors import ConfigError, fit_command
from ltrain.app.search_space import Space, check_spaces, grid_points, spaces_from
from ltrain.app.sources import Sources
from ltrain.app.sweeps import refuse_several_processes
from ltrain.callbacks import Callback
from ltrain.errors import MisconfigurationException

SAMPLERS = ("auto", "gp", "tpe", "random", "grid", "cmaes")
# trials: a Gaussian process beats TPE on small budgets, then costs more; it learns from finished
# trials only, so with a pruner it would propose pruned points again: TPE then
GP_UP_TO = 100
PRUNERS = ("median", "hyperband", "none")
DIRECTIONS = {"maximize": "max", "minimize": "min", "max": "max", "min": "min"}
BLOCK_KEYS = ("space", "metric", "direction", "trials", "sampler", "pruner", "storage", "study")
HEARTBEAT_S = 2  # how often a running trial says it is alive
GRACE_S = 10  # silence after which its process is taken for dead and the trial re-queued
MAX_RETRIES = 3  # re-runs of a trial whose process keeps dying, before it stays failed
WAIT_S = 1.0  # how often a worker with nothing to run looks again for re-queued trials


@dataclass
class Settings:
    """One search: what to vary, what to optimize, how many trials, where the study lives."""

    spaces: list[Space]
    metric: str
    direction: Literal["maximize", "minimize"]
    trials: int
    sampler: str = "tpe"
    pruner: str = "median"
    storage: str = ""
    study: str = ""
    outputs: Path = Path("runs")  # where the best config and the plots go
    seed: int | None = None
    fit_words: list[str] = field(default_factory=list)  # `ltrain fit` words for every trial

    @property
    def mode(self) -> str:
        return DIRECTIONS[self.direction]

    def signature(self) -> dict[str, Any]:
        """What a study was created for; the same `--study` must search the same thing."""
        return {
            "space": {space.key: space.spec for space in self.spaces},
            "metric": self.metric,
            "direction": self.direction,
        }


def settings_for(sources: Sources, options: Mapping[str, Any]) -> Settings:
    """The search's settings: the command's options over the config's `search:` block; every
    space checked against the config's signatures. ConfigError lists each problem."""
    from ltrain.app.config import load
    from ltrain.app.experiment import runs_root
    from ltrain.app.runs_table import config_monitor

    resolved, gathered = load(sources)
    block = gathered.config.get("search") or {}
    unknown = [key for key in block if key not in BLOCK_KEYS]
    if unknown:
        raise ConfigError(
            f"search.{unknown[0]}: unknown key; valid keys: {', '.join(BLOCK_KEYS)} "
            "(jobs and timeout are options of the command)"
        )

    def pick(name: str, default: Any = None) -> Any:
        given = options.get(name)
        return given if given is not None else block.get(name, default)

    spaces = spaces_from(options.get("spaces") or (), block.get("space"))
    monitor, mode = config_monitor(resolved.config)
    metric = pick("metric", monitor)
    if not isinstance(metric, str) or not metric:
        raise ConfigError(
            "--metric: the config monitors no metric; name the one to optimize, e.g. "
            "--metric valid_acc --direction maximize"
        )
    direction = pick("direction")
    if direction is None:
        if metric != monitor:
            raise ConfigError(f"--direction: say whether {metric} should be maximized or minimized")
        direction = "maximize" if mode == "max" else "minimize"
    if direction not in DIRECTIONS:
        raise ConfigError(f"--direction {direction!r}: expected maximize or minimize")
    goal: Literal["maximize", "minimize"] = (
        "maximize" if DIRECTIONS[direction] == "max" else "minimize"
    )
    sampler, pruner = pick("sampler", "auto"), pick("pruner", "median")
    if sampler not in SAMPLERS:
        raise ConfigError(f"--sampler {sampler!r}: expected one of {', '.join(SAMPLERS)}")
    if pruner not in PRUNERS:
        raise ConfigError(f"--pruner {pruner!r}: expected one of {', '.join(PRUNERS)}")
    grid = len(grid_points(spaces)) if sampler == "grid" else None
    trials = pick("trials", grid or 20)
    if isinstance(trials, bool) or not isinstance(trials, int) or trials < 1:
        raise ConfigError(f"--trials {trials!r}: expected a whole number of at least 1")
    if grid is not None and trials > grid:
        raise ConfigError(
            f"--trials {trials}: the grid has {grid} points; give at most that many "
            "(each point runs once)"
        )
    check_spaces(sources, spaces)
    refuse_several_processes(resolved.config["trainer"], "ltrain search")

    name = resolved.config["name"]
    runs_folder = Path(runs_root(resolved.config["trainer"].get("logger"))) / name
    storage = pick("storage") or f"sqlite:///{runs_folder / 'search.db'}"
    study = pick("study") or name
    seed = resolved.config.get("seed")
    return Settings(
        spaces=spaces,
        metric=metric,
        direction=goal,
        trials=trials,
        sampler=sampler,
        pruner=pruner,
        storage=str(storage),
        study=str(study),
        outputs=_sqlite_folder(str(storage)) or runs_folder,
        seed=seed if isinstance(seed, int) and not isinstance(seed, bool) else None,
        fit_words=sources.words(),
    )


def timeout_seconds(text: str) -> float:
    """`--timeout`: seconds, `90s`, `30m`, `2h`, `1d`, `1h30m`, or Lightning's `DD:HH:MM:SS`
    (as `max_time` takes it, read by the same parser)."""
    from ltrain.callbacks.timer import parse_duration

    text = text.strip()
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return float(text)
    if ":" in text:
        try:
            duration = parse_duration(text, "--timeout")
        except MisconfigurationException as error:
            raise ConfigError(str(error)) from None
        assert duration is not None
        return duration.total_seconds()
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    unit = r"(\d+(?:\.\d+)?)\s*([smhd])"
    if not re.fullmatch(rf"(?:{unit}\s*)+", text):
        raise ConfigError(
            f"--timeout {text!r}: expected a duration such as 90s, 30m, 2h, 1h30m or DD:HH:MM:SS"
        )
    return sum(float(number) * units[name] for number, name in re.findall(unit, text))


def _sqlite_folder(url: str) -> Path | None:
    """The folder of a SQLite storage's file (made here), None for a server's URL."""
    if not url.startswith("sqlite:///"):
        return None
    path = Path(url[len("sqlite:///") :])
    return path.parent


# ---------------------------------------------------------------------- the study
def open_study(
    settings: Settings, worker: int = 0, create: bool = True, storage: Any = None
) -> Any:
    """The study in its storage, created on first use; a study created for another space,
    metric or direction is refused rather than mixed."""
    import optuna

    storage = storage or storage_for(settings.storage)
    try:
        study = optuna.create_study(
            storage=storage,
            study_name=settings.study,
            direction=settings.direction,
            pruner=_pruner(settings.pruner),
            load_if_exists=True,
        )
    except ValueError as error:
        raise ConfigError(f"--study {settings.study}: {error}") from None
    study.sampler = _sampler(settings, _sampler_seed(settings.seed, worker, len(study.trials)))
    recorded = study.user_attrs.get("ltrain")
    if recorded is None and create:
        study.set_user_attr("ltrain", settings.signature())
        study.set_user_attr("fit_words", settings.fit_words)
        study.set_user_attr("outputs", str(settings.outputs))
    elif recorded is not None and recorded != settings.signature():
        raise ConfigError(
            f"--study {settings.study}: this study in {settings.storage} searched "
            f"{_describe(recorded)}; give the same --space/--metric/--direction to continue it, "
            "or a new --study NAME"
        )
    if create and settings.sampler == "grid":
        queue_grid(study, settings)
    return study


def storage_for(url: str) -> Any:
    """Optuna's RDB storage with heartbeats, so trials of a dead process are re-queued."""
    import optuna

    _quiet_optuna()
    folder = _sqlite_folder(url)
    engine: dict[str, Any] = {}
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
        engine = {"connect_args": {"timeout": 60}}  # workers wait for each other's writes
    options = {
        "engine_kwargs": engine,
        "heartbeat_interval": HEARTBEAT_S,
        "grace_period": GRACE_S,
        "heartbeat_stale_trial_callback": retry_callback(MAX_RETRIES),
    }
    for _ in range(2 if folder is not None else 0):  # two processes making one file's tables
        try:
            return optuna.storages.RDBStorage(url, **options)
        except Exception:
            time.sleep(1.0)
    try:
        return optuna.storages.RDBStorage(url, **options)
    except Exception as error:  # SQLAlchemy's: a bad URL, a missing driver, no server
        text = str(error).strip()
        first = text.splitlines()[0] if text else type(error).__name__
        raise ConfigError(f"--storage {url}: {first}") from None


def _quiet_optuna() -> None:
    """ltrain prints each trial itself; Optuna's notes on features it calls experimental (the
    heartbeat, its matplotlib plots) and on asking trials by hand are not the user's concern."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used")


def queue_grid(study: Any, settings: Settings) -> None:
    """A grid search queues its points, in an order shuffled by the seed, up to `--trials`: each
    worker takes the next queued point, so no point runs twice, and fewer trials than points
    sample the grid. A point already in the study (run, running or queued) is not queued again."""
    import random

    trials = live_trials(study)
    present = [t.params or t.system_attrs.get("fixed_params", {}) for t in trials]
    points = [p for p in grid_points(settings.spaces) if p not in present]
    random.Random(settings.seed).shuffle(points)
    for point in points[: max(settings.trials - len(trials), 0)]:
        study.enqueue_trial(point)


def retry_callback(max_retry: int | None) -> Any:
    """Optuna's re-queueing of a failed trial with its parameters (renamed in Optuna 4.9)."""
    from optuna import storages

    retry = getattr(storages, "RetryHeartbeatStaleTrialCallback", None)
    return (retry or storages.RetryFailedTrialCallback)(max_retry=max_retry)


def _describe(recorded: Mapping[str, Any]) -> str:
    space = " ".join(f"--space {k}={v}" for k, v in recorded.get("space", {}).items())
    return f"{space} for {recorded.get('direction')} {recorded.get('metric')}"


def _sampler_seed(seed: int | None, worker: int, number: int) -> int | None:
    """The sampler's seed for trial `number`: its random draws depend on the trial's number, not
    on which worker runs it or when, so `--jobs` and resumed searches draw the same start-up
    points as one process would, and no two trials draw the same ones. `worker` tells the
    samplers of the processes apart until their first trial."""
    if seed is None:
        return None
    return (seed * 1_000_003 + 7919 * number + 104_729 * worker) % 2**32


def _sampler(settings: Settings, seed: int | None) -> Any:
    import optuna

    if settings.sampler in ("random", "grid"):  # a grid's trials come queued (queue_grid)
        return optuna.samplers.RandomSampler(seed=seed)
    if settings.sampler == "cmaes":
        try:
            import cmaes  # noqa: F401
        except ImportError:
            raise ConfigError(
                "--sampler cmaes needs the cmaes package: pip install cmaes"
            ) from None
        return optuna.samplers.CmaEsSampler(seed=seed)
    # Optuna's samplers draw 10 random trials before modelling any: a small budget spends half
    # of itself on them
    startup = max(3, min(10, settings.trials // 2))
    if settings.sampler == "gp" or (
        settings.sampler == "auto" and settings.pruner == "none" and settings.trials <= GP_UP_TO
    ):
        return optuna.samplers.GPSampler(seed=seed, n_startup_trials=startup)
    # constant_liar: parallel workers do not all try the same point
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup, constant_liar=True)


def _pruner(name: str) -> Any:
    import optuna

    if name == "median":
        # the first validations are noisy (a large batch or a low rate starts slowly): a trial
        # is held against the others' median from its fourth validation on
        return optuna.pruners.MedianPruner(n_warmup_steps=4)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner()
    return optuna.pruners.NopPruner()


@dataclass(frozen=True)
class Tally:
    """Where the study stands against its budget."""

    counted: int
    running: int
    waiting: int


def _replaced(trials: Sequence[Any]) -> set[int]:
    """Trials that a retry took over (their process died, or Ctrl-C stopped them)."""
    return {n for t in trials for n in t.system_attrs.get("retry_history", [])}


def _counting(trials: Sequence[Any]) -> list[Any]:
    """The trials that count against the budget: neither replaced by a retry nor surplus."""
    replaced = _replaced(trials)
    return [t for t in trials if t.number not in replaced and not t.user_attrs.get("surplus")]


def live_trials(study: Any) -> list[Any]:
    return _counting(study.get_trials(deepcopy=False))


def tally(study: Any) -> Tally:
    from optuna.trial import TrialState

    live = live_trials(study)
    return Tally(
        counted=len(live),
        running=sum(t.state == TrialState.RUNNING for t in live),
        waiting=sum(t.state == TrialState.WAITING for t in live),
    )


def _is_surplus(study: Any, number: int, budget: int) -> bool:
    """Whether a new trial came after the budget was spent (a retry never is)."""
    trials = study.get_trials(deepcopy=False)
    mine = next(t for t in trials if t.number == number)
    if "failed_trial" in mine.system_attrs:
        return False
    return sum(t.number < number for t in _counting(trials)) >= budget


# ---------------------------------------------------------------------- one worker's loop
class ReportToStudy(Callback):
    """Reports the metric to the trial after each validation; stops the fit when the pruner
    says so. Keeps the best value, which is the trial's result."""

    def __init__(self, trial: Any, metric: str, mode: str) -> None:
        self.trial = trial
        self.metric = metric
        self.mode = mode
        self.validations = 0
        self.best: float | None = None
        self.pruned_at: int | None = None
        self.logged: list[str] = []

    def on_validation_end(self, trainer: Any, pl_module: Any) -> None:
        if trainer.sanity_checking or self.pruned_at is not None:
            return
        self.logged = sorted(trainer.callback_metrics)
        value = trainer.callback_metrics.get(self.metric)
        if value is None:
            return
        number = float(value)
        self.validations += 1
        better = max if self.mode == "max" else min
        self.best = number if self.best is None else better(self.best, number)
        self.trial.report(number, self.validations)
        if self.trial.should_prune():
            self.pruned_at = self.validations
            trainer.should_stop = True


class Heartbeat:
    """Tells the storage, every HEARTBEAT_S, that this process is still running a trial."""

    def __init__(self, storage: Any, study_name: str, number: int) -> None:
        study_id = storage.get_study_id_from_name(study_name)
        self._beat = storage.record_heartbeat
        self._trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, number)
        self._stop = threading.Event()
        self._beat(self._trial_id)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            try:
                self._beat(self._trial_id)
            except Exception:  # a busy database: the next beat tries again
                continue

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def work(
    settings: Settings,
    sources: Sources,
    worker: int = 0,
    deadline: float | None = None,
    create: bool = True,
) -> None:
    """Run trials until the study has `settings.trials` of them and none is left running.

    After `deadline` no new trial starts, but as in Optuna's `optimize(timeout=)` each process
    runs at least one. `create` is False in a `--jobs` worker: its search set the study up."""
    from optuna.storages import fail_stale_trials

    storage = storage_for(settings.storage)
    study = open_study(settings, worker, create=create, storage=storage)
    ran = False
    while not (ran and deadline is not None and time.time() >= deadline):
        fail_stale_trials(study)
        now = tally(study)
        if not now.waiting and now.counted >= settings.trials:
            if not now.running or (deadline is not None and time.time() >= deadline):
                return
            time.sleep(WAIT_S)  # another process's trial may yet die and be re-queued
            continue
        trial = study.ask()
        # parameters are drawn when the trial suggests them (run_trial), by this sampler
        study.sampler = _sampler(settings, _sampler_seed(settings.seed, 0, trial.number))
        heartbeat = Heartbeat(storage, settings.study, trial.number)
        try:
            if _is_surplus(study, trial.number, settings.trials):
                trial.set_user_attr("surplus", True)
                study.tell(trial, state=_state("FAIL"))
                continue
            run_trial(study, trial, settings, sources)
            ran = True
        finally:
            heartbeat.stop()


def _state(name: str) -> Any:
    from optuna.trial import TrialState

    return TrialState[name]


def run_trial(study: Any, trial: Any, settings: Settings, sources: Sources) -> None:
    """Fit one trial as an ordinary run and tell the study how it went."""
    from ltrain.app.sweeps import run_member
    from ltrain.console import info
    from ltrain.run_record import RunRecord

    for inherited in ("folder", "error"):  # a re-queued trial carries its predecessor's
        if trial.user_attrs.get(inherited):
            trial.set_user_attr(inherited, None)
    overrides = [space.override(space.suggest(trial)) for space in settings.spaces]
    trial_sources = sources.with_overrides([*sources.overrides, *overrides])
    line = fit_command(trial_sources)
    params = dict(override.split("=", 1) for override in overrides)
    extra = {
        "search": {
            "study": settings.study,
            "storage": settings.storage,
            "trial": trial.number,
            "params": params,
        }
    }
    trial.set_user_attr("overrides", overrides)
    record = RunRecord("fit", line, extra=extra)
    reporter = ReportToStudy(trial, settings.metric, settings.mode)
    info(f"Trial {trial.number}: {' '.join('--set ' + shlex.quote(o) for o in overrides)}")
    try:
        outcome = run_member(trial_sources, record, [reporter])
    except KeyboardInterrupt:
        _requeue(study, trial, "interrupted")
        raise
    if outcome.folder is not None:
        trial.set_user_attr("folder", str(outcome.folder))
    if outcome.error is not None:
        trial.set_user_attr("error", outcome.error)
        study.tell(trial, state=_state("FAIL"))
    elif reporter.pruned_at is not None:
        message = (
            f"pruned after validation {reporter.pruned_at} ({settings.metric}={reporter.best:.6g})"
        )
        record.relabel("pruned", message)
        study.tell(trial, state=_state("PRUNED"))
        info(f"Trial {trial.number} {message}")
    elif reporter.best is None:
        logged = ", ".join(reporter.logged) or "nothing"
        trial.set_user_attr("error", f"{settings.metric} was never logged (logged: {logged})")
        study.tell(trial, state=_state("FAIL"))
        info(f"Trial {trial.number} failed: {settings.metric} was never logged (logged: {logged})")
    else:
        study.tell(trial, reporter.best)
        info(f"Trial {trial.number}: {settings.metric}={reporter.best:.6g}")


def _requeue(study: Any, trial: Any, why: str) -> None:
    """Fail a trial that did not end by itself and queue it again with the same parameters."""
    trial.set_user_attr("error", why)
    study.tell(trial, state=_state("FAIL"))
    frozen = next(t for t in study.get_trials(deepcopy=False) if t.number == trial.number)
    retry_callback(None)(study, frozen)
