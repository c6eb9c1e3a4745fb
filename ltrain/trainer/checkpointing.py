"""Checkpoints of a run: what one holds, restoring from one, resolving `ckpt_path`, and the loop position.

A checkpoint records where in the fit loop it was taken (`LoopPosition`), the generators' state
now and when the epoch's data order was drawn, and the epoch's running aggregates; a resume
replays exactly what was still to come, so a run killed anywhere ends as it would have. The file
holds plain data only (`torch.load(weights_only=True)` reads it): the position is stored as a
dict of plain values under "loops", beside the counters and metrics the loop needs back.
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from ltrain.batch import apply_to_tensors
from ltrain.callbacks.model_checkpoint import first_model_checkpoint
from ltrain.checkpoint import load_checkpoint, plain_data
from ltrain.errors import MisconfigurationException
from ltrain.loggers.base import FolderLogger
from ltrain.seed import rng_state

if TYPE_CHECKING:
    from ltrain.trainer.trainer import Trainer

# The phases of `LoopPosition`: what of the fit loop is still to come at that point.
EPOCH_START = "epoch_start"  # nothing pending: the epoch starts from its first batch
BATCH_END = "batch_end"  # saved in on_train_batch_end: that batch's step row and validation
BETWEEN_BATCHES = "between_batches"  # nothing pending inside the epoch: the next batch
EPOCH_END = "epoch_end"  # saved in on_train_epoch_end: the epoch row and the epoch count


@dataclass(slots=True)
class LoopPosition:
    """Where the fit loop stands. The loop updates it in place as it goes (a few attribute stores
    per batch); a checkpoint stores a copy as plain values."""

    phase: str = EPOCH_START
    epoch: int = 0
    batch: int = 0  # index of the epoch's next batch
    is_last: bool = False  # the batch before `batch` was the epoch's last
    stepped: bool = False  # the batch before `batch` ran an optimizer step

    @classmethod
    def from_dict(cls, loops: Mapping[str, Any]) -> LoopPosition:
        return cls(
            loops["phase"], int(loops["epoch"]), int(loops["batch"]),
            bool(loops["is_last"]), bool(loops["stepped"]),
        )  # fmt: skip


@dataclass
class ResumePoint:
    """What a restored checkpoint leaves for the fit loop's next epoch to replay."""

    position: LoopPosition
    rng: dict[str, Any]  # the generators when the checkpoint was taken
    epoch_start_rng: dict[str, Any] | None  # ... and when that epoch's data order was drawn
    results: dict[str, Any] | None  # the epoch's running aggregates


def checkpoint_state(trainer: Trainer, weights_only: bool) -> dict[str, Any]:
    """Everything a checkpoint file holds, as plain data."""
    from ltrain import __version__

    model = trainer.lightning_module
    state: dict[str, Any] = {
        "ltrain_version": __version__,
        "epoch": trainer.current_epoch,
        "global_step": trainer.global_step,
        "state_dict": model.state_dict(),
        "loops": _loop_state(trainer),
        "precision_name": trainer.precision_plugin.name,
        "device": str(trainer.strategy.root_device),
    }
    hparams = _plain_items(model.hparams_initial)
    if hparams:
        state["hyper_parameters"] = hparams
    datamodule = trainer.datamodule
    if datamodule is not None:  # Lightning's keys: its hparams, its state under its class name
        if datamodule.hparams:
            state[datamodule.CHECKPOINT_HYPER_PARAMS_KEY] = _plain_items(datamodule.hparams)
        datamodule_state = datamodule.state_dict()
        if datamodule_state:
            state[type(datamodule).__qualname__] = datamodule_state
    if not weights_only:
        state["rng"] = rng_state()
        state["loggers"] = [logger.state_dict() for logger in trainer.loggers]
        state["optimizer_states"] = [opt.state_dict() for opt in trainer.optimizers]
        state["lr_schedulers"] = [c.scheduler.state_dict() for c in trainer.lr_scheduler_configs]
        state["precision"] = trainer.precision_plugin.state_dict()
        state["callbacks"] = {
            c.state_key: c.state_dict() for c in trainer.callbacks if c.state_dict()
        }
        # Lightning's order: the callbacks (full checkpoints only), then the module
        for callback in trainer.callbacks:
            callback.on_save_checkpoint(trainer, model, state)
    model.on_save_checkpoint(state)
    return state


def _loop_state(trainer: Trainer) -> dict[str, Any]:
    position = trainer._position
    loops: dict[str, Any] = {
        **asdict(position),
        "batches_that_stepped": trainer._batches_that_stepped,
        "should_stop": trainer.should_stop,
        "callback_metrics": dict(trainer.callback_metrics),
        "progress_bar_metrics": dict(trainer.progress_bar_metrics),
    }
    if position.phase != EPOCH_START and trainer.training:
        results = trainer.results.state_dict(trainer.lightning_module)
        if trainer.world_size > 1:  # each rank's partial sums: a resumed rank takes its own
            on_cpu = apply_to_tensors(results, lambda t: t.cpu())
            results = {"per_rank": trainer.strategy.gather_objects(on_cpu)}
        loops["results"] = results
        if position.batch:
            loops["epoch_start_rng"] = trainer._epoch_start_rng
    return loops


def continue_in_checkpoint_version(trainer: Trainer, path: str) -> None:
    """A fit resumed from a checkpoint in a logger's own `version_N` folder goes on in that
    version, as `ltrain fit --resume` does (Lightning starts a new one and keeps the rows written
    after the checkpoint there, so the run's history would hold them twice)."""
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.basename(folder) == "checkpoints":
        folder = os.path.dirname(folder)
    version = re.fullmatch(r"version_(\d+)", os.path.basename(folder))
    if version is None:
        return
    for logger in trainer.loggers:
        if isinstance(logger, FolderLogger) and logger.fixed_log_dir is None:
            if os.path.abspath(logger.root_dir) == os.path.dirname(folder):
                logger.use_version(int(version.group(1)))


def restore_module(trainer: Trainer, path: str, stage: str) -> dict[str, Any]:
    """Load the weights from `path`, in Lightning's order before configure_optimizers: the
    module's on_load_checkpoint, its weights, then (fit only) the callbacks' on_load_checkpoint
    and states. Returns the checkpoint for `restore_training_state`."""
    # Read on the host: optimizers move their state next to each parameter themselves and keep
    # a non-capturable Adam's step counts on the CPU (on the GPU every step would read them back
    # with .item()), and generator states are CPU tensors. Only the loop's own tensors (epoch
    # sums, metric states, reported values) go to the device, where the run adds to them.
    checkpoint = load_checkpoint(path, map_location="cpu")
    missing = [k for k in ("optimizer_states", "loops", "rng") if k not in checkpoint]
    if stage == "fit" and missing:
        raise MisconfigurationException(
            f"{path}: cannot resume training from it (no {', '.join(missing)}; a weights-only "
            "or foreign checkpoint); load its weights with validate/test instead"
        )
    datamodule = trainer.datamodule
    if datamodule is not None and type(datamodule).__qualname__ in checkpoint:
        datamodule.load_state_dict(checkpoint[type(datamodule).__qualname__])
    model = trainer.lightning_module
    model.on_load_checkpoint(checkpoint)
    try:
        model.load_state_dict(checkpoint["state_dict"], strict=model.strict_loading)
    except RuntimeError as error:  # torch lists every key on many lines: keep the first fact
        detail = " ".join(str(error).split("\n", 2)[1:2]).strip()
        raise MisconfigurationException(
            f"{path}: its weights do not fit {type(model).__name__} ({detail})"
        ) from None
    if stage == "fit":
        for callback in trainer.callbacks:
            callback.on_load_checkpoint(trainer, model, checkpoint)
        callback_states = checkpoint.get("callbacks", {})
        for callback in trainer.callbacks:
            if callback.state_key in callback_states:
                callback.load_state_dict(callback_states[callback.state_key])
    return checkpoint


def restore_training_state(trainer: Trainer, checkpoint: dict[str, Any]) -> None:
    """Everything a fit needs to go on where the checkpoint stopped, once the optimizers exist."""
    states = checkpoint["optimizer_states"]
    for optimizer, state in zip(trainer.optimizers, states, strict=False):
        optimizer.load_state_dict(state)
    for config, state in zip(
        trainer.lr_scheduler_configs, checkpoint.get("lr_schedulers", []), strict=False
    ):
        config.scheduler.load_state_dict(state)
    trainer.precision_plugin.load_state_dict(checkpoint.get("precision", {}))
    trainer.global_step = int(checkpoint["global_step"])
    device = trainer.strategy.root_device
    loops = apply_to_tensors(checkpoint["loops"], lambda t: t.to(device))
    trainer._batches_that_stepped = int(loops["batches_that_stepped"])
    trainer.current_epoch = int(loops["epoch"])
    trainer.should_stop = trainer.should_stop or bool(loops["should_stop"])  # on_fit_start may ask
    trainer.callback_metrics.update(loops["callback_metrics"])
    trainer.progress_bar_metrics.update(loops["progress_bar_metrics"])
    loggers, states = trainer._writing_loggers, checkpoint.get("loggers", [])
    continued = [
        logger.load_state_dict(state) for logger, state in zip(loggers, states, strict=False)
    ]
    # the rows the resume replays were written in the checkpoint's own files only (and are cut
    # there now): other files do not get them again, as in Lightning
    trainer._replay_skips = [
        logger for i, logger in enumerate(loggers) if i >= len(continued) or not continued[i]
    ]
    trainer._position = LoopPosition.from_dict(loops)
    trainer._resume = ResumePoint(
        position=LoopPosition.from_dict(loops),
        rng=checkpoint["rng"],
        epoch_start_rng=loops.get("epoch_start_rng"),
        results=loops.get("results"),
    )


def resolve_ckpt_path(
    trainer: Trainer, stage: str, model_given: bool, ckpt_path: str | os.PathLike | None
) -> str | None:
    """The file `ckpt_path` names: "best" and "last" are this trainer's ModelCheckpoint files.

    Without a path, validate/test/predict of the fitted module (no model passed) load the best
    checkpoint, with Lightning's warning, as Lightning 2.x does; when no ModelCheckpoint saved
    one, they run the fitted module as it is (where Lightning raises).
    """
    if ckpt_path is None:
        callback = first_model_checkpoint(trainer.callbacks)
        best = callback.best_model_path if callback is not None else ""
        if model_given or stage == "fit" or trainer.model is None or not best:
            return None
        warnings.warn(
            f"`.{stage}(ckpt_path=None)` was called without a model. The best model of the "
            f"previous `fit` call will be used. You can pass `.{stage}(ckpt_path='best')` to use "
            f"the best model or `.{stage}(ckpt_path='last')` to use the last model. If you pass "
            "a value, this warning will be silenced.",
            UserWarning,
            stacklevel=4,
        )
        return best
    if ckpt_path in ("best", "last"):
        callback = first_model_checkpoint(trainer.callbacks)
        path = None
        if callback is not None:
            path = callback.best_model_path if ckpt_path == "best" else callback.last_model_path
        if not path and ckpt_path == "last":
            # a new trainer resuming a run: its logger's version folder holds last.ckpt (asked
            # without claiming a new version folder, which a failed lookup would leave empty)
            folder = callback.dirpath if callback else None
            if folder is None:
                log_dir = trainer.loggers[0].fixed_log_dir if trainer.loggers else trainer.log_dir
                folder = os.path.join(log_dir, "checkpoints") if log_dir else None
            candidate = os.path.join(folder, "last.ckpt") if folder else None
            path = candidate if candidate and os.path.isfile(candidate) else None
        if not path:
            raise MisconfigurationException(
                f"ckpt_path={ckpt_path!r}: no {ckpt_path} checkpoint was saved by this "
                "trainer's ModelCheckpoint; pass a file path instead."
            )
        return path
    return os.fspath(ckpt_path)


def save_resume_checkpoint(trainer: Trainer) -> str:
    """Save last.ckpt where the ModelCheckpoint keeps it (else under the log dir); its path."""
    callback = first_model_checkpoint(trainer.callbacks)
    if callback is not None and callback.dirpath:
        return callback.save_last_checkpoint(trainer)
    path = os.path.join(trainer.log_dir, "checkpoints", "last.ckpt")
    trainer.save_checkpoint(path)
    return path


def _plain_items(hparams: Mapping[str, Any]) -> dict[str, Any]:
    plain = {}
    for key, value in hparams.items():
        try:
            plain[key] = plain_data(value)
        except TypeError:
            continue
    return plain
