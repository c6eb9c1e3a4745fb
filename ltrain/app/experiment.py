"""One command's experiment: config -> objects -> run folder -> Trainer call -> summary.

Order matters for "nothing half-written": the whole config is validated first, then the objects are
built, and only then is `runs/<name>/version_N` claimed and `config.yaml` written into it. If the
run dies before writing anything else, the folder is removed again, so a failed start leaves no
empty run folder behind. Otherwise `run.json` (run_record.py) records how the run ended, whatever
ended it.
"""

from __future__ import annotations

import copy
import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ltrain.app.config import LTRAIN, imported_modules, instantiate, load, one_or_many, to_yaml
from ltrain.app.errors import ConfigError
from ltrain.app.overrides import apply_override
from ltrain.app.signatures import import_qualified
from ltrain.app.sources import Sources
from ltrain.callbacks import Callback
from ltrain.callbacks.model_checkpoint import first_model_checkpoint
from ltrain.console import info
from ltrain.errors import MisconfigurationException, WorkersFailed
from ltrain.files import version_number
from ltrain.run_record import RUN_FILE, RunRecord, command_line
from ltrain.strategies import launcher_environment

DEFAULT_SAVE_DIR = "runs"


def run_command(
    command: str,
    sources: Sources,
    ckpt: str | None = None,
    out: str | None = None,
    lr_find: Mapping[str, Any] | None = None,
    apply: bool = False,
    record: RunRecord | None = None,
    callbacks: Sequence[Callback] = (),
) -> Any:
    """Run `fit`, `validate`, `test`, `predict` or `lr-find` as the command line does.

    `sources` are the config's (CONFIG, `--config` files and flags, `--set`); without a config
    file the config is the one `ckpt` carries. `ckpt` (`--ckpt`, `--resume`) wins over a config's
    `ckpt_path`, as an option typed wins over a file. `lr_find` holds the finder's options
    (min_lr, max_lr, num_training); with `apply`, the suggestion is written into a copy of the
    config next to it. `record` (the version folder's run.json) defaults to one naming the command
    line as typed; a sweep passes its member's. `callbacks` join the config's (a search's pruning).
    """
    if record is None:
        record = RunRecord(command, command_line())

    checkpoint_path = None
    base = None
    if ckpt is not None and not (command == "fit" and ckpt == "last"):
        checkpoint_path, stored_config = _checkpoint_and_config(ckpt)
        if not sources.files:
            if stored_config is None:
                raise ConfigError(
                    f"--ckpt {ckpt}: the checkpoint carries no config; pass a CONFIG file"
                )
            stored = _config_from_text(stored_config, ckpt)
            stored.pop("ckpt_path", None)  # the checkpoint the stored run started from
            modules = ", ".join(imported_modules(stored)) or "none"
            info(f"Using the config stored in {checkpoint_path}; it imports: {modules}")
            base = (stored, str(checkpoint_path))
    layout = LTRAIN.for_command("fit" if command == "lr-find" else command)
    resolved_config, gathered = load(sources, layout, base=base)
    resolved, raw = resolved_config.config, gathered.config
    ckpt = ckpt or resolved.get("ckpt_path")
    if command in ("test", "predict") and ckpt is None:
        raise ConfigError(f"{command} needs --ckpt PATH or ckpt_path in the config")
    if checkpoint_path is None and ckpt is not None:
        last = command == "fit" and ckpt == "last"
        checkpoint_path = _last_checkpoint(resolved) if last else find_checkpoint(ckpt)
    strategy = strategy_for(resolved["trainer"])
    if strategy.distributed and command == "lr-find":
        raise MisconfigurationException(
            "trainer: lr-find runs in one process; add --set trainer.devices=1 "
            "--set trainer.strategy=auto, then train with several"
        )
    if strategy.distributed and launcher_environment() is None:
        from ltrain.strategies.launcher import run_workers

        code = run_workers(strategy.world_size)  # each worker runs this same command
        if code:
            raise WorkersFailed(code)
        return None
    strategy.setup()  # a worker joins its group first: rank 0 claims the folder for all ranks

    import ltrain as pl

    if resolved.get("seed") is not None:  # `true` picks one, as Lightning does; it is recorded
        resolved["seed"] = pl.seed_everything(
            None if resolved["seed"] is True else resolved["seed"]
        )
    model = _build(resolved["model"], "model")
    if resolved.get("optimizer") is not None:
        from ltrain.app.optimizers import attach_optimizers

        attach_optimizers(
            model, resolved["optimizer"], resolved.get("lr_scheduler"), owner="ltrain"
        )
    datamodule = _build(resolved["data"], "data") if resolved.get("data") else None
    trainer_args = dict(resolved["trainer"])
    configured = _build(one_or_many(trainer_args.pop("callbacks", None)), "trainer.callbacks")
    logger_spec = trainer_args.pop("logger", None)

    resume_folder = (
        _run_folder_of(checkpoint_path) if command == "fit" and checkpoint_path else None
    )
    folder, created = None, False
    if strategy.is_global_zero:
        folder, created = _run_folder(resolved["name"], logger_spec, resume_folder)
    folder = strategy.broadcast(folder)
    try:
        loggers = _loggers(logger_spec, raw_logger=_raw_trainer(raw).get("logger"), folder=folder)
        trainer_args.setdefault("default_root_dir", None)
        if trainer_args["default_root_dir"] is None:
            trainer_args["default_root_dir"] = str(folder)
        trainer = pl.Trainer(
            **trainer_args,
            logger=loggers if loggers else False,
            callbacks=[*configured, *callbacks, StoreConfig(to_yaml(resolved))],
        )
        header = [
            record.command_line,
            f"device: {trainer.device}, precision: {trainer.precision}",
        ]
        if checkpoint_path is not None:
            header.append(f"checkpoint: {checkpoint_path}")
        config_text = to_yaml(resolved, "\n".join(header))
    except MisconfigurationException as error:
        _remove_if_empty(folder, created)
        raise MisconfigurationException(f"trainer: {error}") from None
    except BaseException:
        _remove_if_empty(folder, created)
        raise
    from ltrain.files import write_text_atomically

    if trainer.is_global_zero:
        write_text_atomically(folder / "config.yaml", config_text)
    info(f"Run folder: {folder}")
    record.start(folder, trainer, checkpoint_path)
    trainer.run_record = record  # the trainer records how its run ends
    try:
        result = _call_trainer(trainer, command, model, datamodule, checkpoint_path, lr_find)
        if command == "predict" and trainer.is_global_zero:  # rank 0 holds every rank's
            _write_predictions(result, Path(out) if out else folder / "predictions.csv")
        if command == "lr-find" and trainer.is_global_zero:
            _report_lr_find(result, folder, raw, sources.files[0] if apply else None)
            record.end(trainer)  # the finder trained with a trainer of its own
    except BaseException as error:
        if _remove_if_only_config(folder, created):
            record.discard()
        elif record.folder is not None:  # a failure after the trainer ended (writing outputs)
            record.end(trainer, error)
        raise
    _summary(trainer, command, folder)
    return result


def strategy_for(trainer: Mapping[str, Any]) -> Any:
    """The process layout the trainer settings ask for (checked before anything is built)."""
    from ltrain.strategies import make_strategy

    try:
        return make_strategy(
            trainer.get("strategy", "auto"),
            trainer.get("accelerator", "auto"),
            trainer.get("devices", "auto"),
            trainer.get("num_nodes", 1),
        )
    except MisconfigurationException as error:
        raise MisconfigurationException(f"trainer: {error}") from None


def _build(spec: Any, key: str) -> Any:
    """Instantiate a config value; a value a class refuses is reported under its config key."""
    try:
        return instantiate(spec)
    except MisconfigurationException as error:
        raise MisconfigurationException(f"{key}: {error}") from None


def _call_trainer(
    trainer: Any,
    command: str,
    model: Any,
    datamodule: Any,
    ckpt: Path | None,
    lr_find: Mapping[str, Any] | None = None,
) -> Any:
    ckpt_path = os.fspath(ckpt) if ckpt is not None else None
    if command == "lr-find":
        from ltrain.tuner import Tuner

        options = dict(lr_find or {})
        return Tuner(trainer).lr_find(model, datamodule=datamodule, update_attr=False, **options)
    if command == "fit":
        return trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path)
    if command == "validate":
        return trainer.validate(model, datamodule=datamodule, ckpt_path=ckpt_path)
    if command == "test":
        return trainer.test(model, datamodule=datamodule, ckpt_path=ckpt_path)
    return trainer.predict(model, datamodule=datamodule, ckpt_path=ckpt_path)


# ---------------------------------------------------------------------- checkpoints
def find_checkpoint(path: str | os.PathLike) -> Path:
    """A checkpoint file, or a version folder's best checkpoint (else `last.ckpt`).

    The best one is named by ModelCheckpoint's state in the folder's newest checkpoint; only its
    file name is used, so a moved run folder still works and a checkpoint cannot point elsewhere.
    """
    path = Path(path)
    if path.is_file():
        return path
    if not path.exists():
        raise ConfigError(f"--ckpt {path}: no such file or folder")
    folder = path / "checkpoints" if (path / "checkpoints").is_dir() else path
    newest = _newest_checkpoint(folder)
    if newest is None:
        raise ConfigError(f"--ckpt {path}: no .ckpt files in {folder}")
    for key, state in _load(newest).get("callbacks", {}).items():
        best = state.get("best_model_path") if key.startswith("ModelCheckpoint") else None
        if best and (folder / Path(best).name).is_file():
            return folder / Path(best).name
    last = folder / "last.ckpt"
    return last if last.is_file() else newest


def _newest_checkpoint(folder: Path) -> Path | None:
    """The most recently written `*.ckpt` in `folder` (the name breaks a tie), or None."""
    files = [path for path in folder.glob("*.ckpt") if path.is_file()]
    return max(files, key=lambda path: (path.stat().st_mtime, path.name), default=None)


def _load(path: Path) -> dict[str, Any]:
    """A checkpoint read safely; any reason it can't be is one config error naming the file."""
    from ltrain.checkpoint import UnsafeCheckpointError, load_checkpoint

    try:
        return load_checkpoint(path, map_location="cpu")
    except (UnsafeCheckpointError, OSError) as error:
        raise ConfigError(f"--ckpt {path}: {error}") from None


def _checkpoint_and_config(ckpt: str) -> tuple[Path, str | None]:
    path = find_checkpoint(ckpt)
    stored = _load(path).get("config")
    return path, stored if isinstance(stored, str) else None


def _config_from_text(text: str, ckpt: str) -> dict[str, Any]:
    import yaml

    try:
        config = yaml.safe_load(text)
    except yaml.YAMLError:
        config = None
    if not isinstance(config, dict):
        raise ConfigError(f"--ckpt {ckpt}: the stored config is not a YAML mapping")
    return config


def _last_checkpoint(resolved: Mapping[str, Any]) -> Path:
    from ltrain.files import existing_versions

    root = Path(runs_root(resolved["trainer"].get("logger"))) / resolved["name"]
    for version in reversed(existing_versions(root)):
        folder = root / f"version_{version}" / "checkpoints"
        if (folder / "last.ckpt").is_file():
            return folder / "last.ckpt"
        newest = _newest_checkpoint(folder)
        if newest is not None:
            return newest
    raise ConfigError(f"--resume last: no checkpoint under {root}/version_*/checkpoints")


def _run_folder_of(checkpoint: Path) -> Path | None:
    """The version folder a checkpoint belongs to (`<name>/version_N/checkpoints/`), or None.

    A fit resumed from a checkpoint anywhere else starts a new version folder, as Lightning's
    `fit(ckpt_path=...)` logs into the logger's next version: a folder that is no run folder
    (`foo_7`, `some/dir`) gets neither config.yaml nor metrics.
    """
    parent = checkpoint.resolve().parent
    if parent.name == "checkpoints" and version_number(parent.parent) is not None:
        return parent.parent
    return None


class StoreConfig(Callback):
    """Puts the resolved config into every checkpoint, so `ltrain test --ckpt` needs nothing else."""

    def __init__(self, text: str) -> None:
        self.text = text

    def on_save_checkpoint(self, trainer: Any, pl_module: Any, checkpoint: dict[str, Any]) -> None:
        checkpoint["config"] = self.text


# ---------------------------------------------------------------------- run folders and loggers
def _raw_trainer(raw: Mapping[str, Any]) -> Mapping[str, Any]:
    trainer = raw.get("trainer")
    return trainer if isinstance(trainer, Mapping) else {}


def runs_root(logger_spec: Any) -> str:
    """The folder a config's runs go under: its first version-folder logger's save_dir, else runs."""
    folder_loggers = [s for s in one_or_many(logger_spec) if _writes_version_folder(s)]
    first = folder_loggers[0] if folder_loggers else None
    if isinstance(first, Mapping):
        save_dir = (first.get("init_args") or {}).get("save_dir")
        if isinstance(save_dir, str) and save_dir not in (".", ""):
            return save_dir
    return DEFAULT_SAVE_DIR


def _run_folder(name: str, logger_spec: Any, resume_folder: Path | None) -> tuple[Path, bool]:
    from ltrain.files import claim_version_folder

    if resume_folder is not None:
        return resume_folder, False
    _, folder = claim_version_folder(Path(runs_root(logger_spec)) / name)
    return folder, True


def _loggers(spec: Any, raw_logger: Any, folder: Path) -> list[Any]:
    """The run's loggers, all writing into `folder` (<save_dir>/<name>/version_N).

    The name is the folder's, not the config's: a fit resumed from another run's checkpoint
    continues in that run's folder.
    """
    from ltrain.loggers import CSVLogger

    if spec is False:
        return []
    version, name, save_dir = version_number(folder), folder.parent.name, str(folder.parent.parent)
    if spec is None or spec is True:
        return [CSVLogger(save_dir=save_dir, name=name, version=version)]
    raw_items = one_or_many(raw_logger)
    loggers = []
    for i, item in enumerate(one_or_many(spec)):
        item = dict(item)
        init_args = dict(item.get("init_args") or {})
        given = (
            (raw_items[i].get("init_args") or {})
            if i < len(raw_items) and isinstance(raw_items[i], Mapping)
            else {}
        )
        given = _not_default(given, item["class_path"])
        if not _writes_version_folder(item):
            given = init_args  # W&B and MLflow keep their own stores: given nothing
        if "version" in init_args and "version" not in given:
            init_args["version"] = version
        if "name" in init_args and "name" not in given:
            init_args["name"] = name
        if "save_dir" in init_args and "save_dir" not in given:
            init_args["save_dir"] = save_dir
        item["init_args"] = init_args
        loggers.append(instantiate(item))
    return loggers


def _not_default(given: Mapping[str, Any], class_path: str) -> dict[str, Any]:
    """The arguments set to something but their default. A LightningCLI dump lists every one
    (`name: lightning_logs`, `version: null`), which is no wish to leave the run folder."""
    import inspect

    parameters = inspect.signature(import_qualified(class_path)).parameters
    return {
        key: value
        for key, value in given.items()
        if key not in parameters or parameters[key].default != value
    }


def _writes_version_folder(spec: Any) -> bool:
    """Whether a resolved logger spec names a class that writes into runs/<name>/version_N."""
    if not isinstance(spec, Mapping) or not isinstance(spec.get("class_path"), str):
        return False
    return getattr(import_qualified(spec["class_path"]), "writes_version_folder", True)


def _remove_if_empty(folder: Path, created: bool) -> None:
    """Undo a claimed version folder (and its name folder, when that is left empty)."""
    if created:
        for path in (folder, folder.parent):
            try:
                path.rmdir()
            except OSError:
                return


def _remove_if_only_config(folder: Path, created: bool) -> bool:
    """A run that failed before producing anything leaves no folder behind; True if removed."""
    if created and folder.is_dir():
        contents = {p.name for p in folder.iterdir()}
        if contents <= {"config.yaml", RUN_FILE, "checkpoints"} and not any(
            (folder / "checkpoints").glob("*")
        ):
            shutil.rmtree(folder, ignore_errors=True)
            return True
    return False


# ---------------------------------------------------------------------- outputs
def _write_predictions(outputs: Any, path: Path) -> None:
    """`predictions.csv` for per-sample tensors (one row per sample), `.pt` for anything else."""
    import torch

    from ltrain.checkpoint import plain_data
    from ltrain.files import write_atomically, write_text_atomically

    per_sample = (
        isinstance(outputs, list)
        and outputs
        and all(isinstance(o, torch.Tensor) and 1 <= o.dim() <= 2 for o in outputs)
        and len({o.shape[1:] for o in outputs}) == 1
    )
    if path.suffix == ".csv" and not per_sample:
        path = path.with_suffix(".pt")
    if path.suffix == ".csv":
        import pandas as pd

        stacked = torch.cat([o.detach().cpu() for o in outputs])
        if stacked.dim() == 1:
            frame = pd.DataFrame({"prediction": stacked.numpy()})
        else:
            frame = pd.DataFrame(
                stacked.float().numpy(), columns=[f"class_{i}" for i in range(stacked.shape[1])]
            )
        frame.index.name = "index"
        write_text_atomically(path, frame.to_csv())
    else:
        plain = plain_data(outputs, "predictions")
        write_atomically(path, lambda handle: torch.save(plain, handle))
    info(f"Predictions: {path}")


def _report_lr_find(
    finder: Any, folder: Path, raw: Mapping[str, Any], apply_to: str | None
) -> None:
    """Write lr_find.csv/.png, print the suggestion, and with --apply a config that uses it."""
    csv_path, png_path = finder.save(folder)
    suggestion = finder.suggestion()
    info(f"Learning-rate sweep: {csv_path}, {png_path}")
    if suggestion is None:
        info(
            "No suggestion: the sweep ended before the loss had a falling stretch; raise num_training."
        )
        return
    info(f"Suggested learning rate: {suggestion:.3g}")
    if apply_to is None:
        return
    from ltrain.files import write_text_atomically

    updated = copy.deepcopy(dict(raw))
    apply_override(updated, f"model.lr={suggestion!r}")
    source = Path(apply_to)
    target = source.with_name(f"{source.stem}.lr-find{source.suffix}")
    header = f"{source} with model.init_args.lr set by ltrain lr-find ({csv_path})"
    write_text_atomically(target, to_yaml(updated, header))
    info(f"Config with the suggested learning rate: {target}")


def _repeats_another(name: str, values: Mapping[str, float]) -> bool:
    """NAME_step and NAME_epoch repeat NAME (which holds the epoch value): show NAME once.

    Only those two suffixes: `loss_kl` next to `loss` is a metric of its own.
    """
    stem, _, suffix = name.rpartition("_")
    return suffix in ("step", "epoch") and stem in values


def _summary(trainer: Any, command: str, folder: Path) -> None:
    from ltrain.results import to_floats

    if command == "fit":
        callback = first_model_checkpoint(trainer.callbacks)
        if callback is not None and callback.best_model_path:
            score = callback.best_model_score
            scored = (
                f" ({callback.monitor}={score:.4g})"
                if callback.monitor and score is not None
                else ""
            )
            info(f"Best checkpoint: {callback.best_model_path}{scored}")
        if trainer.callback_metrics:
            values = to_floats(trainer.callback_metrics)
            values = {k: v for k, v in values.items() if not _repeats_another(k, values)}
            width = max(len(k) for k in values)
            lines = [f"  {k:<{width}}  {v:.6g}" for k, v in sorted(values.items())]
            info("Final metrics:\n" + "\n".join(lines))
    info(f"Done: {folder}")
