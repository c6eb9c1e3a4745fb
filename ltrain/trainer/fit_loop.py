"""The fit loop: epochs, batches, the optimization step, when validation runs, stopping on a signal.

Read top to bottom, this file is the training run: `fit_loop` runs epochs until a stop reason,
`train_epoch` runs batches, `train_batch` runs one optimization step through a closure (the
optimizer may call it more than once), and `backward` is where the loss meets `loss.backward()`.
The loop records its `LoopPosition` as it goes, so a checkpoint taken from any hook resumes exactly.
"""

from __future__ import annotations

import contextlib
import math
import signal
import threading
import time
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

import torch

from ltrain.console import info
from ltrain.errors import MisconfigurationException, RunInterrupted
from ltrain.results import Results
from ltrain.seed import rng_state, set_rng_state
from ltrain.trainer.checkpointing import (
    BATCH_END,
    BETWEEN_BATCHES,
    EPOCH_END,
    EPOCH_START,
    save_resume_checkpoint,
)
from ltrain.trainer.compiling import say_compile_time
from ltrain.trainer.evaluation_loop import evaluation_epoch
from ltrain.trainer.hooks import call_hook, step_args
from ltrain.trainer.loaders import (
    as_loader_list,
    iterate_from,
    load_train_loader,
    load_val_loaders,
    may_validate,
    set_loader_epoch,
    to_device,
    validation_epoch,
    with_last_flag,
)
from ltrain.trainer.log_rows import check_losses, log_row, row_due
from ltrain.trainer.optimizers import step_optimizer, step_schedulers
from ltrain.trainer.states import RunningStage

if TYPE_CHECKING:
    from ltrain.trainer.trainer import Trainer

SIGNAL_AGREEMENT_BATCHES = 10  # how often data-parallel ranks compare received signals


def fit_loop(trainer: Trainer) -> None:
    """The sanity check, then epochs until max_epochs/max_steps or a stop request.

    As in Lightning, training that is over before it starts (limit_train_batches=0, no batches,
    a resumed run already at its maximum, a stop already requested) runs no training hook at
    all, not even on_train_start.
    """
    # as in Lightning, the check (also when resuming) leaves every generator as it found it: its
    # loaders' iterators draw seeds, and training must draw the same numbers with or without it
    before = rng_state()
    _run_sanity_check(trainer)
    set_rng_state(before)
    if trainer.limit_train_batches == 0:
        return
    load_train_loader(trainer)  # Lightning asks for it here, after the sanity check
    if validation_epoch(trainer):  # else the first validation asks for them
        load_val_loaders(trainer)
    trainer._val_check_batch = val_check_batch(trainer)
    stop_reason = "No training batches" if not trainer.num_training_batches else None
    stop_reason = stop_reason or _fit_stop_reason(trainer)
    if stop_reason is None:
        trainer._eval_step_rows = {}  # Lightning counts these rows across the fit's validations
        # the first epoch's aggregator: what on_train_start logs goes into that epoch's row
        trainer.results = trainer._new_results()
        call_hook(trainer, "on_train_start")
        with _graceful_signals(trainer):
            while True:
                stop_reason = _fit_stop_reason(trainer)
                if stop_reason is not None:
                    break
                with trainer.profiler.profile("run_training_epoch"):
                    train_epoch(trainer)
                _stop_if_signaled(trainer, agree=True)
        _say_stopped(trainer, stop_reason)
        call_hook(trainer, "on_train_end")
    else:
        _say_stopped(trainer, stop_reason)


def _say_stopped(trainer: Trainer, stop_reason: str) -> None:
    if stop_reason and trainer.is_global_zero:  # '' is a granted stop request: nothing to say
        info(f"`Trainer.fit` stopped: {stop_reason}.")


def _fit_stop_reason(trainer: Trainer) -> str | None:
    """Why fitting is over, or None while it goes on ('' when should_stop was set)."""
    if trainer.max_steps != -1 and trainer.global_step >= trainer.max_steps:
        return f"`max_steps={trainer.max_steps}` reached"
    if trainer.max_epochs != -1 and trainer.current_epoch >= trainer.max_epochs:
        return f"`max_epochs={trainer.max_epochs}` reached"
    if trainer.should_stop:
        if _minimum_reached(trainer):
            return ""
        # the request stands (as in Lightning): fit stops as soon as the minimum is met
        if not trainer._said_minimum_not_met:
            trainer._said_minimum_not_met = True
            info(
                "Trainer was signaled to stop but the required "
                f"`min_epochs={trainer.min_epochs!r}` or `min_steps={trainer.min_steps!r}` has "
                "not been met. Training will continue..."
            )
    return None


def _minimum_reached(trainer: Trainer) -> bool:
    epochs_ok = trainer.min_epochs is None or trainer.current_epoch >= trainer.min_epochs
    steps_ok = trainer.min_steps is None or trainer.global_step >= trainer.min_steps
    return epochs_ok and steps_ok


def _run_sanity_check(trainer: Trainer) -> None:
    steps = trainer.num_sanity_val_steps
    if not steps:
        return
    load_val_loaders(trainer)
    if not trainer.num_val_batches or not sum(trainer.num_val_batches):
        return
    limits = [n if steps == -1 else min(steps, n) for n in trainer.num_val_batches]
    kept = (
        dict(trainer.callback_metrics),
        dict(trainer.progress_bar_metrics),
        dict(trainer.logged_metrics),
    )
    trainer.sanity_checking = True
    trainer.state.stage = RunningStage.SANITY_CHECKING
    call_hook(trainer, "on_sanity_check_start")
    evaluation_epoch(trainer, "validation", as_loader_list(trainer.val_dataloaders), limits)
    call_hook(trainer, "on_sanity_check_end")
    trainer.sanity_checking = False
    trainer.state.stage = RunningStage.TRAINING
    # what the sanity check logged must not reach callbacks, loggers or the progress bar: they
    # keep what they had before (nothing, or what a resume restored)
    shown = (trainer.callback_metrics, trainer.progress_bar_metrics, trainer.logged_metrics)
    for metrics, before in zip(shown, kept, strict=True):
        metrics.clear()
        metrics.update(before)


def train_epoch(trainer: Trainer) -> None:
    """One training epoch, or the rest of the one a checkpoint was taken in."""
    model = trainer.lightning_module
    resume, trainer._resume = trainer._resume, None
    results = trainer.results  # made when the previous epoch finished (or by fit_loop)
    phase = resume.position.phase if resume is not None else EPOCH_START
    if resume is not None and resume.results is not None and phase != EPOCH_START:
        results.load_state_dict(_own_results_state(trainer, resume.results), model)
    if phase == EPOCH_END:
        _finish_train_epoch(trainer, results)
        trainer._replay_skips = []
        return
    if load_train_loader(trainer):  # reload_dataloaders_every_n_epochs: before the epoch's hooks
        trainer._val_check_batch = val_check_batch(trainer)
    loader = trainer.train_dataloader
    set_loader_epoch(loader, trainer.current_epoch)
    start = resume.position.batch if resume is not None else 0
    if resume is not None and start == 0:
        set_rng_state(resume.rng)
    call_hook(trainer, "on_train_epoch_start")
    if resume is not None and start and resume.epoch_start_rng is not None:
        # the epoch's data order came from the generators' state when its iterator was made
        set_rng_state(resume.epoch_start_rng)
    trainer._epoch_start_rng = rng_state()
    batches = iterate_from(loader, trainer.current_epoch, start)
    if resume is not None and start:
        set_rng_state(resume.rng)
    done = False
    if resume is not None and phase == BATCH_END:
        position = resume.position
        done = _after_train_batch(trainer, results, start - 1, position.is_last, position.stepped)
    trainer._replay_skips = []  # what follows is new to every logger
    if not done:
        position = trainer._position
        for batch_idx, batch, is_last in with_last_flag(
            batches, trainer.num_training_batches, start
        ):
            trainer.is_last_batch = is_last
            trainer._batch_idx = batch_idx
            batch = to_device(trainer, batch, 0)
            results.start_batch(batch)
            if call_hook(trainer, "on_train_batch_start", batch, batch_idx) == -1:
                break
            began = time.perf_counter() if trainer._first_compiled_step else 0.0
            with trainer.profiler.profile("run_training_batch"):
                stepped = train_batch(trainer, batch, batch_idx, is_last)
            if trainer._first_compiled_step:
                say_compile_time(trainer, began)
            # counted before any hook can save a checkpoint, so a checkpoint's position is exact
            trainer._batches_that_stepped += stepped
            position.phase = BATCH_END
            position.epoch = trainer.current_epoch
            position.batch = batch_idx + 1
            position.is_last = is_last
            position.stepped = stepped
            call_hook(trainer, "on_train_batch_end", trainer._step_output, batch, batch_idx)
            if _after_train_batch(trainer, results, batch_idx, is_last, stepped):
                break
            _stop_if_signaled(trainer, agree=(batch_idx + 1) % SIGNAL_AGREEMENT_BATCHES == 0)
    _end_train_epoch(trainer, results)


def _own_results_state(trainer: Trainer, state: dict[str, Any]) -> dict[str, Any]:
    """This rank's epoch sums from a checkpoint (rank 0's if the number of ranks changed)."""
    if "per_rank" not in state:
        return state
    states = state["per_rank"]
    return states[trainer.global_rank] if len(states) == trainer.world_size else states[0]


def _after_train_batch(
    trainer: Trainer, results: Results, batch_idx: int, is_last: bool, stepped: bool
) -> bool:
    """What follows on_train_batch_end: the step row and validation when due. True ends the epoch."""
    done = _train_epoch_done(trainer)
    if stepped:
        if row_due(trainer, trainer._batches_that_stepped):
            log_row(trainer, results.step_values, trainer._batches_that_stepped - 1)
        if _validation_due(trainer, batch_idx, is_last):
            _validate_during_fit(trainer)
    # the rest of the position was recorded before on_train_batch_end (or restored with it)
    trainer._position.phase = BETWEEN_BATCHES
    return done


def train_batch(trainer: Trainer, batch: Any, batch_idx: int, is_last: bool) -> bool:
    """Run one training batch; returns whether it completed an optimizer step."""
    model = trainer.lightning_module
    if not model.automatic_optimization:
        with trainer.precision_plugin.forward_context():
            output = trainer._training_step_runner(
                *step_args(trainer, "training_step", batch, batch_idx)
            )
        trainer.results.hook = None
        trainer._step_output = _batch_end_outputs(output)
        return True
    accumulate = trainer.accumulate_grad_batches
    steps_now = is_last or (batch_idx + 1) % accumulate == 0
    zero_grad_first = batch_idx % accumulate == 0
    optimizer = trainer.optimizers[0]
    # StochasticWeightAveraging's BatchNorm epoch: forward passes only, the gradients left as they are
    skip_backward = trainer._skip_backward

    def closure() -> torch.Tensor | None:
        with trainer.precision_plugin.forward_context():
            output = trainer._training_step_runner(
                *step_args(trainer, "training_step", batch, batch_idx)
            )
        trainer.results.hook = None
        loss = _training_loss(output)
        trainer._step_output = _batch_end_outputs(output)
        if zero_grad_first and not skip_backward:
            call_hook(trainer, "on_before_zero_grad", optimizer)
            if trainer._default_zero_grad:
                optimizer.zero_grad()
            else:
                call_hook(
                    trainer, "optimizer_zero_grad", trainer.current_epoch, batch_idx, optimizer
                )
        if loss is not None and not skip_backward:
            backward(trainer, loss / accumulate if accumulate > 1 else loss)
        return loss

    if not steps_now:
        with _no_gradient_sync(trainer):
            closure()
        return False
    if trainer._default_optimizer_step:
        step_optimizer(trainer, optimizer, closure)
    else:
        call_hook(
            trainer,
            "optimizer_step",
            trainer.current_epoch,
            batch_idx,
            trainer.lightning_optimizers[0],
            closure,
        )
    if trainer.lr_scheduler_configs:
        step_schedulers(trainer, "step", batch_idx=batch_idx)
        if is_last or _train_epoch_done(trainer):
            step_schedulers(trainer, "epoch", plateau=False)
    return True


def backward(trainer: Trainer, loss: torch.Tensor, *args: Any, **kwargs: Any) -> None:
    """`loss.backward()` between on_before_backward and on_after_backward (through the precision
    when it scales the loss, or through the module's own `backward` when it has one)."""
    # kept and checked at the next row or checkpoint: reading it now would sync the GPU every
    # step. Backward frees the graph's buffers, so holding the loss costs a few small objects.
    trainer._loss_checks.append(
        (loss, trainer.global_step, trainer.current_epoch, trainer._batch_idx)
    )
    call_hook(trainer, "on_before_backward", loss)
    if not trainer.lightning_module.automatic_optimization:
        trainer.strategy.before_manual_backward(trainer._training_step_runner, loss)
    if trainer._default_backward:
        loss.backward(*args, **kwargs)
    else:
        results = trainer.results
        outer, results.hook = results.hook, "backward"  # the module's own may log, as in Lightning
        trainer.precision_plugin.backward(loss, trainer.lightning_module, *args, **kwargs)
        results.hook = outer
    call_hook(trainer, "on_after_backward")


def _no_gradient_sync(trainer: Trainer) -> Any:
    """While gradients accumulate, DDP need not average them: only the stepping batch does."""
    no_sync = getattr(trainer._training_step_runner, "no_sync", None)
    return no_sync() if no_sync is not None else contextlib.nullcontext()


def _train_epoch_done(trainer: Trainer) -> bool:
    if trainer.max_steps != -1 and trainer.global_step >= trainer.max_steps:
        return True
    return trainer.should_stop and _minimum_reached(trainer)


def val_check_batch(trainer: Trainer) -> float:
    """Validation runs after every this many training batches (inf: at the epoch's end only).

    With a time interval batches do not count (inf): the clock starts now, when the training
    loader is (re)loaded, as in Lightning, and validation is due once it has run that long.
    """
    if trainer._val_check_seconds is not None:
        trainer._last_val_time = time.monotonic()
        return math.inf
    interval, n = trainer.val_check_interval, trainer.num_training_batches
    if isinstance(interval, int) and not isinstance(interval, bool):
        if trainer.check_val_every_n_epoch is not None and interval > n:
            raise MisconfigurationException(
                f"val_check_interval={interval} is more than the {n} training batches of an "
                "epoch; use a smaller number, a fraction, or check_val_every_n_epoch=None."
            )
        return interval
    if n == math.inf:
        return math.inf
    return max(1, int(n * interval))


def _validation_due(trainer: Trainer, batch_idx: int, is_last: bool) -> bool:
    if not may_validate(trainer) or not validation_epoch(trainer):
        return False
    every = trainer.check_val_every_n_epoch
    if trainer.should_stop and _minimum_reached(trainer):
        return True  # as in Lightning, a granted stop request validates first (max_steps not)
    if trainer._val_check_seconds is not None:  # by the clock alone, even at the epoch's end
        return time.monotonic() - trainer._last_val_time >= trainer._val_check_seconds
    check = trainer._val_check_batch
    if check == math.inf or check == trainer.num_training_batches:
        return is_last
    # without check_val_every_n_epoch, Lightning counts batches across epochs, so `check` may
    # exceed an epoch (val_check_batch refuses that otherwise); the batches that stepped count
    # them (without accumulation, all of them)
    index = batch_idx if every is not None else trainer._batches_that_stepped - 1
    return (index + 1) % check == 0


def _validate_during_fit(trainer: Trainer) -> None:
    load_val_loaders(trainer, reload=True)  # the first time, or again when a reload is due
    if not sum(trainer.num_val_batches):
        return
    trainer.lightning_module.on_validation_model_zero_grad()
    train_results = trainer.results
    trainer.state.stage = RunningStage.VALIDATING
    evaluation_epoch(
        trainer, "validation", as_loader_list(trainer.val_dataloaders), trainer.num_val_batches
    )
    trainer.state.stage = RunningStage.TRAINING
    trainer.results = train_results
    trainer._last_val_time = time.monotonic()  # a time interval counts from here


def _end_train_epoch(trainer: Trainer, results: Results) -> None:
    results.start_batch(None)
    results.epoch_values()  # callbacks in on_train_epoch_end see this epoch's values
    position = trainer._position
    position.phase, position.epoch, position.batch = EPOCH_END, trainer.current_epoch, 0
    position.is_last = position.stepped = False
    call_hook(trainer, "on_train_epoch_end")
    _finish_train_epoch(trainer, results)


def _finish_train_epoch(trainer: Trainer, results: Results) -> None:
    """What follows on_train_epoch_end: the epoch row, the epoch count, plateau schedulers."""
    check_losses(trainer)
    logged, _ = results.epoch_values()
    if logged:
        log_row(trainer, logged, trainer._batches_that_stepped - 1)
    results.reset_metrics()
    trainer.results = trainer._new_results()  # the next epoch's
    for logger in trainer._writing_loggers:
        logger.save()
    trainer.current_epoch += 1
    if trainer.lr_scheduler_configs and trainer.lightning_module.automatic_optimization:
        step_schedulers(trainer, "epoch", plateau=True)
    position = trainer._position
    position.phase, position.epoch, position.batch = EPOCH_START, trainer.current_epoch, 0
    position.is_last = position.stepped = False


def _training_loss(output: Any) -> torch.Tensor | None:
    if output is None:
        return None
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, Mapping):
        if "loss" not in output:
            raise MisconfigurationException(
                "training_step returned a dict without a 'loss' key; automatic optimization "
                "needs {'loss': tensor, ...}."
            )
        return output["loss"]
    raise MisconfigurationException(
        f"training_step must return a loss tensor, a dict with 'loss', or None; "
        f"got {type(output).__name__}"
    )


def _batch_end_outputs(output: Any) -> Any:
    """What on_train_batch_end receives: the step output with the loss detached."""
    if isinstance(output, torch.Tensor):
        return {"loss": output.detach()}
    if isinstance(output, Mapping):
        return {k: v.detach() if isinstance(v, torch.Tensor) else v for k, v in output.items()}
    return output


# ---------------------------------------------------------------------- signals
def _stop_if_signaled(trainer: Trainer, agree: bool) -> None:
    """After SIGINT/SIGTERM, stop at this consistent point: save last.ckpt, flush, exit.

    With several processes, all must stop after the same batch, so they compare what they
    received only at points where `agree` is True (every SIGNAL_AGREEMENT_BATCHES batches
    and at epoch ends): one small collective there instead of one every batch.
    """
    signum = trainer._received_signal
    if trainer.world_size > 1:
        if not agree:
            return
        flag = torch.tensor(float(signum or 0), device=trainer.strategy.root_device)
        signum = int(trainer.strategy.reduce(flag, "max").item()) or None
    if signum is None:
        return
    path = save_resume_checkpoint(trainer)
    for logger in trainer._writing_loggers:
        logger.save()
    name = signal.Signals(signum).name
    info(f"Received {name}: saved {path}; resume with trainer.fit(..., ckpt_path={path!r}).")
    raise RunInterrupted(signum, path)


@contextlib.contextmanager
def _graceful_signals(trainer: Trainer) -> Iterator[None]:
    """During fit, SIGINT/SIGTERM ask the loop to stop at its next consistent point.

    A second signal gets the previous handler (a second Ctrl-C interrupts at once).
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous: dict[int, Any] = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}

    def handle(signum: int, frame: Any) -> None:
        trainer._received_signal = signum
        signal.signal(signum, previous[signum])

    for signum in previous:
        signal.signal(signum, handle)
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        trainer._received_signal = None
