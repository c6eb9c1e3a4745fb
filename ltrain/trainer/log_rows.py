"""Rows to the loggers, and the nan/inf check of the losses kept since the last row.

A row is the single point where logged tensors become floats, so it is also where the losses of
the steps since the previous row are checked: one host sync per row instead of one per step. A
checkpoint checks them too, so no checkpoint is ever written over a good one after a nan loss.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import torch

from ltrain.errors import NonFiniteLossError
from ltrain.module import Module
from ltrain.results import to_floats

if TYPE_CHECKING:
    from ltrain.trainer.trainer import Trainer


def log_row(
    trainer: Trainer, values: Mapping[str, torch.Tensor], step: int, with_epoch: bool = True
) -> None:
    """Send one row to every logger; the single point where logged tensors become floats.

    As in Lightning, a training or epoch row (`with_epoch`) gets the epoch, unless a logged
    `step` value names the row's step instead; an evaluation step row has neither.
    """
    check_losses(trainer)
    if not trainer.loggers or not values:
        return
    row: dict[str, Any] = to_floats(values)
    if with_epoch:
        logged_step = row.pop("step", None)
        if logged_step is not None:
            step = int(logged_step)
        else:
            row.setdefault("epoch", trainer.current_epoch)
    for logger in trainer._writing_loggers:
        if logger not in trainer._replay_skips:
            logger.log_metrics(row, step)


def logger_step(trainer: Trainer) -> int:
    """The step a row written at a batch's or epoch's start takes: the batches that stepped."""
    return trainer._batches_that_stepped


def row_due(trainer: Trainer, stepping_batches: int) -> bool:
    """Lightning's `should_update_logs` for the training batch that is the `stepping_batches`-th
    to step: every `log_every_n_steps` of them, and every one once a stop is requested."""
    every = trainer.log_every_n_steps
    return bool(every) and (stepping_batches % every == 0 or trainer.should_stop)


def log_hyperparameters(trainer: Trainer, model: Module) -> None:
    """Hand the hyperparameters and the model (for its graph) to every logger at the start of a
    stage (any stage), then save.

    Lightning's rule: the module's and the datamodule's, merged, from whichever of the two called
    `save_hyperparameters()` (with `logger=True`); a key both have must hold the same value.
    Every logger saves even when there are none, which is when TensorBoard writes hparams.yaml.
    """
    datamodule = trainer.datamodule
    hparams: dict[str, Any] | None = None
    if model._log_hyperparams:
        hparams = dict(model.hparams_initial)
    if datamodule is not None and datamodule._log_hyperparams:
        ours = datamodule.hparams_initial
        if hparams is not None:
            clashes = sorted(
                k for k in hparams.keys() & ours.keys() if not _same(hparams[k], ours[k])
            )
            if clashes:
                raise RuntimeError(  # Lightning's type, which users' code may catch
                    f"hyperparameters {clashes} are saved by both {type(model).__name__} and "
                    f"{type(datamodule).__name__} with different values; give them one value "
                    "or different names"
                )
        hparams = {**(hparams or {}), **ours}
    for logger in trainer._writing_loggers:
        if hparams is not None:
            logger.log_hyperparams(hparams)
        logger.log_graph(model)  # TensorBoard's log_graph=True
        logger.save()


def _same(a: Any, b: Any) -> bool:
    """Lightning's test of a key both hold: the same type and equal (a tensor: the same one)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, torch.Tensor):
        return a is b
    return bool(a == b)


def check_losses(trainer: Trainer) -> None:
    """Raise if a loss since the last check was nan/inf, naming where (one host sync)."""
    checks, trainer._loss_checks = trainer._loss_checks, []
    finite = [True]
    if checks:
        with torch.no_grad():
            finite = torch.isfinite(torch.stack([c[0].float() for c in checks])).tolist()
    # data-parallel ranks stop together, or the others would wait in their next collective
    if trainer.world_size > 1 and trainer.strategy.reduce_boolean_decision(all(finite), all=True):
        return
    if all(finite):
        if trainer.world_size == 1:
            return
        raise NonFiniteLossError(
            f"the loss was nan or inf on another rank by global step {trainer.global_step}; "
            "training stopped and no checkpoint was written after it."
        )
    _, step, epoch, batch_idx = checks[finite.index(False)]
    raise NonFiniteLossError(
        f"the loss was nan or inf at global step {step} (epoch {epoch}, batch {batch_idx}); "
        "training stopped and no checkpoint was written after it. "
        + (_half_eps_hint(trainer) or "Lower the learning rate, clip gradients "
           "(gradient_clip_val) or check the data.")
    )  # fmt: skip


def _half_eps_hint(trainer: Trainer) -> str | None:
    """Why a '16-true' run with Adam's default eps diverges at once, when that is the case:
    its eps (1e-8) is 0 in float16, so a parameter whose gradient is 0 divides 0 by 0."""
    if trainer.precision_plugin.name != "16-true":
        return None
    tiny = torch.finfo(torch.float16).tiny
    for optimizer in trainer.optimizers:
        for group in optimizer.param_groups:
            eps = group.get("eps")
            if isinstance(eps, float) and 0 <= eps < tiny:
                return (
                    f"Under precision='16-true' the optimizer's eps={eps:g} is below float16's "
                    f"smallest normal number ({tiny:.1e}): give it eps=1e-4, or use "
                    "precision='16-mixed' or 'bf16-true'."
                )
    return None
