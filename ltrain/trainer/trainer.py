"""`Trainer`: its arguments and public state, fit / validate / test / predict, and one run's lifecycle.

The loops live beside this file, as plain functions that take the trainer: `fit_loop.py`,
`evaluation_loop.py`, with `hooks.py` (the one dispatcher), `optimizers.py`, `loaders.py`,
`log_rows.py` and `checkpointing.py`; its read-only attributes are in `views.py`, `trainer.state`'s
enums in `states.py`. The trainer owns every counter and every piece of run
state; nothing is kept at module level, so a second Trainer in one process starts clean. The
path from `fit()` to `loss.backward()`, every frame of it under automatic optimization with the
module's own `optimizer_step` and `backward` and 32-bit precision (`tests/test_fit_loop.py`
checks this list):

    Trainer.fit                  trainer.py
    Trainer._run                 trainer.py      the run lifecycle: setup, hooks, teardown
    fit_loop                     fit_loop.py     epochs
    train_epoch                  fit_loop.py     batches
    train_batch                  fit_loop.py     one optimization step
    step_optimizer               optimizers.py   the step through the precision; counts it
    Precision.optimizer_step     precision.py
    wrapper, _use_grad, step     torch.optim     torch's Optimizer.step (SGD's), calls the closure
    closure_then_hooks           precision.py    the closure, then on_before_optimizer_step
    closure                      fit_loop.py     training_step, zero_grad
    backward                     fit_loop.py     on_before_backward, loss.backward(), on_after_backward

Hook order (Lightning's: callbacks before the module, except that in on_train_epoch_end those
that decide from metrics run after it):

    prepare_data; setup(stage); configure_model; with ckpt_path: on_load_checkpoint (module,
    then callbacks) and the weights; configure_optimizers; on_fit_start; with ckpt_path: the
    optimizers', schedulers' and loops' state
    sanity check: val_dataloader, on_sanity_check_start, validation loop, on_sanity_check_end
    train_dataloader (and val_dataloader, if no sanity check asked for it); on_train_start
    for epoch:
        on_train_epoch_start
        for batch:
            on_train_batch_start            (a module returning -1 ends the epoch)
            optimizer_step(closure): training_step, on_before_zero_grad, optimizer_zero_grad,
                on_before_backward, backward, on_after_backward,
                on_before_optimizer_step, configure_gradient_clipping, step
            step-interval schedulers (epoch-interval ones after the last batch)
            on_train_batch_end; step row to loggers every log_every_n_steps (every batch once
                a stop is requested)
            validation when due (or a stop is granted): on_validation_model_zero_grad,
                on_validation_model_eval, on_validation_start, on_validation_epoch_start,
                (on_validation_batch_start, validation_step, on_validation_batch_end)*,
                on_validation_epoch_end, validation row, on_validation_end, each submodule's
                mode put back (or on_validation_model_train when overridden)
        on_train_epoch_end; training epoch row; plateau schedulers
    on_train_end; on_fit_end; teardown(stage) (a failed run: on_exception instead)

SIGINT/SIGTERM stop at the next point between batches, after saving last.ckpt.

What a `Module` may use of its trainer is written down in `ltrain.module.TrainerContract`:
besides the counters and loggers, `results` (what `self.log` feeds), `optimizers`,
`lightning_optimizers`, `lr_scheduler_configs`, `backward()` and `step_optimizer()`.
"""

from __future__ import annotations

import math
import os
from datetime import timedelta
from typing import Any

import torch

from ltrain.callbacks.base import Callback
from ltrain.callbacks.timer import parse_duration
from ltrain.checkpoint import save_checkpoint
from ltrain.console import info
from ltrain.data.datamodule import DataModule
from ltrain.errors import MisconfigurationException, RunInterrupted, TunerExit
from ltrain.loggers.base import Logger, use_rank_zero_versions
from ltrain.module import Module
from ltrain.precision import make_precision
from ltrain.profilers import Profiler, make_profiler
from ltrain.results import BarebonesResults, Results
from ltrain.run_record import RunRecord, command_line
from ltrain.strategies import DDPStrategy, SingleDeviceStrategy, make_strategy
from ltrain.strategies.devices import announce_device
from ltrain.trainer.arguments import (
    check_barebones,
    check_choice,
    check_fast_dev_run,
    check_int,
    check_limit,
    check_plugins,
    check_val_check_interval,
    make_loggers,
    restore_determinism,
    set_determinism,
)
from ltrain.trainer.checkpointing import (
    LoopPosition,
    ResumePoint,
    checkpoint_state,
    continue_in_checkpoint_version,
    resolve_ckpt_path,
    restore_module,
    restore_training_state,
)
from ltrain.trainer.compiling import is_compiled, unwrap_compiled
from ltrain.trainer.evaluation_loop import evaluate, predict
from ltrain.trainer.fit_loop import backward, fit_loop
from ltrain.trainer.hooks import (
    HookPlan,
    call_hook,
    make_callbacks,
    merge_model_callbacks,
    order_callbacks,
)
from ltrain.trainer.loaders import (
    BatchTransfer,
    FitSources,
    batch_transfer_hooks,
    load_loaders,
)
from ltrain.trainer.log_rows import check_losses, log_hyperparameters
from ltrain.trainer.optimizers import (
    LightningOptimizer,
    LRSchedulerConfig,
    configure_optimizers,
    step_optimizer,
)
from ltrain.trainer.states import RunningStage, TrainerFn, TrainerState, TrainerStatus
from ltrain.trainer.views import TrainerViews

_STAGES = {
    "fit": RunningStage.TRAINING,
    "validate": RunningStage.VALIDATING,
    "test": RunningStage.TESTING,
    "predict": RunningStage.PREDICTING,
}


class Trainer(TrainerViews):
    """Trains and evaluates a `Module`; arguments and defaults are Lightning's."""

    def __init__(
        self,
        *,
        accelerator: str = "auto",
        strategy: str | SingleDeviceStrategy | DDPStrategy = "auto",
        devices: int | str | list[int] = "auto",
        num_nodes: int = 1,
        precision: int | str = "32-true",
        logger: bool | Logger | list[Logger] | None = None,
        callbacks: Callback | list[Callback] | None = None,
        fast_dev_run: bool | int = False,
        max_epochs: int | None = None,
        min_epochs: int | None = None,
        max_steps: int = -1,
        min_steps: int | None = None,
        limit_train_batches: int | float | None = None,
        limit_val_batches: int | float | None = None,
        limit_test_batches: int | float | None = None,
        limit_predict_batches: int | float | None = None,
        overfit_batches: int | float = 0.0,
        val_check_interval: int | float | str | timedelta | dict[str, int] | None = None,
        check_val_every_n_epoch: int | None = 1,
        num_sanity_val_steps: int | None = None,
        log_every_n_steps: int | None = None,
        enable_checkpointing: bool | None = None,
        enable_progress_bar: bool | None = None,
        enable_model_summary: bool | None = None,
        accumulate_grad_batches: int = 1,
        gradient_clip_val: int | float | None = None,
        gradient_clip_algorithm: str | None = None,
        deterministic: bool | str | None = None,
        benchmark: bool | None = None,
        inference_mode: bool = True,
        default_root_dir: str | os.PathLike | None = None,
        max_time: str | timedelta | dict[str, int] | None = None,
        reload_dataloaders_every_n_epochs: int = 0,
        use_distributed_sampler: bool = True,
        sync_batchnorm: bool = False,
        detect_anomaly: bool = False,
        barebones: bool = False,
        plugins: Any = None,
        profiler: str | Profiler | None = None,
    ) -> None:
        check_plugins(plugins)
        self.barebones = barebones
        if barebones:
            check_barebones(
                logger=logger, enable_checkpointing=enable_checkpointing,
                enable_progress_bar=enable_progress_bar, enable_model_summary=enable_model_summary,
                log_every_n_steps=log_every_n_steps, num_sanity_val_steps=num_sanity_val_steps,
                fast_dev_run=fast_dev_run, detect_anomaly=detect_anomaly, profiler=profiler,
            )  # fmt: skip
            logger = enable_checkpointing = enable_progress_bar = enable_model_summary = False
            log_every_n_steps = num_sanity_val_steps = 0
        self.profiler = make_profiler(profiler)
        self.strategy = make_strategy(strategy, accelerator, devices, num_nodes)
        self.precision_plugin = make_precision(precision, self.strategy.root_device)
        self.default_root_dir = os.fspath(default_root_dir) if default_root_dir else os.getcwd()

        self.fast_dev_run = check_fast_dev_run(fast_dev_run)
        if self.fast_dev_run:
            n = self.fast_dev_run
            max_epochs, max_steps, num_sanity_val_steps = 1, n, 0
            limit_train_batches = limit_val_batches = limit_test_batches = n
            limit_predict_batches, val_check_interval, check_val_every_n_epoch = n, 1.0, 1
            info(
                f"Running in `fast_dev_run` mode: will run the requested loop using {n} batch(es). "
                "Logging and checkpointing is suppressed."
            )
        if max_epochs is None:  # with a time budget (or steps), time (or steps) ends the fit
            max_epochs = 1000 if max_steps == -1 and min_steps is None and max_time is None else -1
        check_int("max_epochs", max_epochs, minimum=-1)
        check_int("max_steps", max_steps, minimum=-1)
        check_int("accumulate_grad_batches", accumulate_grad_batches, minimum=1)
        self.max_epochs = max_epochs
        self.min_epochs = min_epochs
        self.max_steps = max_steps
        self.min_steps = min_steps
        self.overfit_batches = check_limit("overfit_batches", overfit_batches)
        if self.overfit_batches:
            limit_train_batches = limit_val_batches = self.overfit_batches
        self.limit_train_batches = check_limit("limit_train_batches", limit_train_batches)
        self.limit_val_batches = check_limit("limit_val_batches", limit_val_batches)
        self.limit_test_batches = check_limit("limit_test_batches", limit_test_batches)
        self.limit_predict_batches = check_limit("limit_predict_batches", limit_predict_batches)
        # a time interval: validation when that many seconds passed since the last (or the start)
        self.val_check_interval, self._val_check_seconds = check_val_check_interval(
            val_check_interval
        )
        self._last_val_time = 0.0  # time.monotonic() then
        if check_val_every_n_epoch is not None:
            check_int("check_val_every_n_epoch", check_val_every_n_epoch, minimum=1)
        self.check_val_every_n_epoch = check_val_every_n_epoch
        self.num_sanity_val_steps = 2 if num_sanity_val_steps is None else num_sanity_val_steps
        check_int("num_sanity_val_steps", self.num_sanity_val_steps, minimum=-1)
        self.log_every_n_steps = 50 if log_every_n_steps is None else log_every_n_steps
        check_int("log_every_n_steps", self.log_every_n_steps, minimum=0)
        self.accumulate_grad_batches = accumulate_grad_batches
        check_int("reload_dataloaders_every_n_epochs", reload_dataloaders_every_n_epochs, minimum=0)
        self.reload_dataloaders_every_n_epochs = reload_dataloaders_every_n_epochs
        self.use_distributed_sampler = use_distributed_sampler
        if sync_batchnorm and self.strategy.distributed and self.device.type != "cuda":
            raise MisconfigurationException(
                f"sync_batchnorm=True needs CUDA devices (torch's SyncBatchNorm runs on GPUs "
                f"only); this data-parallel run is on {self.device.type}. Leave it False there."
            )
        self.sync_batchnorm = sync_batchnorm
        self.detect_anomaly = detect_anomaly
        self.gradient_clip_val = gradient_clip_val
        check_choice(
            "gradient_clip_algorithm", gradient_clip_algorithm, (None, "norm", "value"),
            "'norm' or 'value'",
        )  # fmt: skip
        self.gradient_clip_algorithm = gradient_clip_algorithm
        check_choice(
            "deterministic", deterministic, (None, True, False, "warn"),
            "True, False, 'warn' or None",
        )  # fmt: skip
        self.deterministic = deterministic
        self.benchmark = benchmark
        self.inference_mode = inference_mode

        self.loggers = make_loggers(logger, self.default_root_dir, bool(self.fast_dev_run))
        self.callbacks = make_callbacks(
            callbacks,
            checkpointing=enable_checkpointing is not False,
            progress_bar=enable_progress_bar is not False,
            model_summary=enable_model_summary is not False,
            max_time=parse_duration(max_time, "max_time"),
        )

        # run state, public so callbacks can read it
        self.state = TrainerState()
        self.current_epoch = 0
        self.global_step = 0
        self.should_stop = False
        self.sanity_checking = False
        self.is_last_batch = False
        self.training = self.validating = self.testing = self.predicting = False
        self.callback_metrics: dict[str, torch.Tensor] = {}
        self.logged_metrics: dict[str, torch.Tensor] = {}
        self.progress_bar_metrics: dict[str, torch.Tensor] = {}
        self.optimizers: list[torch.optim.Optimizer] = []
        self.lightning_optimizers: list[LightningOptimizer] = []  # what `self.optimizers()` gives
        self.lr_scheduler_configs: list[LRSchedulerConfig] = []
        self.num_training_batches: int | float = 0
        self.num_val_batches: list[int | float] = []
        self.num_test_batches: list[int | float] = []
        self.num_predict_batches: list[int | float] = []
        self.train_dataloader: Any = None
        self.val_dataloaders: Any = None  # as given: one loader, a list or a dict, as in Lightning
        self.test_dataloaders: Any = None
        self.predict_dataloaders: Any = None
        self._lightning_module: Module | None = None
        self.datamodule: DataModule | None = None
        self.run_record: RunRecord | None = None  # run.json's writer, when the CLI provides one
        # the aggregator of the loop that runs: what `self.log` feeds (replaced per loop run)
        self.results = self._new_results()

        # loop state of the files beside this one
        self._batches_that_stepped = 0  # the logger's step: batches that ran an optimizer step
        self._position = LoopPosition()  # where the fit loop stands; checkpoints store it
        self._resume: ResumePoint | None = None  # what the restore found, used by train_epoch
        self._ckpt_path: str | None = None  # the checkpoint the current (or last) run loaded
        self._replay_skips: list[Logger] = []  # loggers given no row of a resume's replay
        self._epoch_start_rng: dict[str, Any] | None = None
        # (loss, global step, epoch, batch): checked for nan/inf when the host syncs
        self._loss_checks: list[tuple[torch.Tensor, int, int, int]] = []
        self._received_signal: int | None = None
        self._batch_idx = 0
        self._eval_step_rows: dict[int, int] = {}  # evaluation step rows so far, per loader
        self._hook_plans: dict[str, HookPlan] = {}  # hooks.plan_hook's, per run
        self._takes_batch_idx: dict[str, bool] = {}  # hooks.step_args', per run
        self._val_check_batch: float = math.inf
        self._batch_transfer = BatchTransfer(None, None, None)  # the batch hooks, set per run
        self._fit_sources: FitSources | None = None  # where fit's loaders come from, per fit
        self._step_output: Any = None
        self._training_step_runner: Any = None  # the module's training_step, or DDP around it
        # which of the module's step hooks the fit loop may skip (optimizers.configure_optimizers)
        self._clipping_overridden = False
        self._default_optimizer_step = self._default_zero_grad = self._default_backward = True
        self._skip_backward = False  # StochasticWeightAveraging's forward-only BatchNorm epoch
        self._return_predictions = True
        self._first_compiled_step = False  # the next training step compiles: time it
        self._said_minimum_not_met = False  # the min_epochs/min_steps notice is printed once a run
        if self.is_global_zero:
            announce_device(self.strategy.root_device, self.precision_plugin.name)

    # ------------------------------------------------------------------ entry points
    def fit(
        self,
        model: Module,
        train_dataloaders: Any = None,
        val_dataloaders: Any = None,
        datamodule: DataModule | None = None,
        ckpt_path: str | None = None,
    ) -> None:
        """Train `model`; data comes from the arguments, a datamodule, or the module's own hooks."""
        if isinstance(train_dataloaders, DataModule):
            datamodule, train_dataloaders = train_dataloaders, None
        self._run("fit", model, datamodule, (train_dataloaders, val_dataloaders), ckpt_path)

    def validate(
        self,
        model: Module | None = None,
        dataloaders: Any = None,
        ckpt_path: str | None = None,
        verbose: bool = True,
        datamodule: DataModule | None = None,
    ) -> list[dict[str, float]]:
        """Run one validation epoch; returns one dict of metrics per dataloader."""
        if isinstance(dataloaders, DataModule):
            datamodule, dataloaders = dataloaders, None
        return self._run("validate", model, datamodule, (dataloaders,), ckpt_path, verbose)

    def test(
        self,
        model: Module | None = None,
        dataloaders: Any = None,
        ckpt_path: str | None = None,
        verbose: bool = True,
        datamodule: DataModule | None = None,
    ) -> list[dict[str, float]]:
        """Run one test epoch; returns one dict of metrics per dataloader."""
        if isinstance(dataloaders, DataModule):
            datamodule, dataloaders = dataloaders, None
        return self._run("test", model, datamodule, (dataloaders,), ckpt_path, verbose)

    def predict(
        self,
        model: Module | None = None,
        dataloaders: Any = None,
        datamodule: DataModule | None = None,
        return_predictions: bool | None = None,
        ckpt_path: str | None = None,
    ) -> list[Any] | None:
        """Run `predict_step` over every batch; returns what it returned, one entry per batch."""
        if isinstance(dataloaders, DataModule):
            datamodule, dataloaders = dataloaders, None
        self._return_predictions = return_predictions is not False
        return self._run("predict", model, datamodule, (dataloaders,), ckpt_path)

    def save_checkpoint(self, filepath: str | os.PathLike, weights_only: bool = False) -> None:
        """Write a checkpoint of the current state (atomically; plain data only)."""
        if self._lightning_module is None:
            raise MisconfigurationException("save_checkpoint needs a model: call fit() first.")
        check_losses(self)  # never write a checkpoint over a good one after a nan loss
        state = checkpoint_state(self, weights_only)
        if self.is_global_zero:
            save_checkpoint(state, filepath)
        self.strategy.barrier()  # no rank reads or lists the file before it exists

    # ------------------------------------------------------------------ the module's contract
    def backward(self, loss: torch.Tensor, *args: Any, **kwargs: Any) -> None:
        """Run backward on `loss` with the backward hooks, through the precision (which scales
        the loss under 16-mixed); what `Module.manual_backward` calls."""
        backward(self, loss, *args, **kwargs)

    def step_optimizer(
        self, optimizer: torch.optim.Optimizer, closure: Any = None, **kwargs: Any
    ) -> Any:
        """Step `optimizer` through the precision, with on_before_optimizer_step and clipping
        after the closure, and count the step; what `LightningOptimizer.step` calls."""
        return step_optimizer(self, optimizer, closure, **kwargs)

    # ------------------------------------------------------------------ one run of any stage
    def _run(
        self,
        stage: str,
        model: Module | None,
        datamodule: DataModule | None,
        loaders: tuple,
        ckpt_path: str | None,
        verbose: bool = True,
    ) -> Any:
        # "best"/"last" name this trainer's files, before the module's callbacks may replace its own
        path = self._ckpt_path = resolve_ckpt_path(self, stage, model is not None, ckpt_path)
        if stage == "fit" and path is not None:
            continue_in_checkpoint_version(self, path)
        model = self._attach(stage, model, datamodule)
        self._set_stage(stage)
        self.state = TrainerState(TrainerStatus.RUNNING, TrainerFn(stage), _STAGES[stage])
        # as in Lightning, each run starts with no metrics from the previous one
        self.callback_metrics.clear()
        self.logged_metrics.clear()
        self.progress_bar_metrics.clear()
        self.should_stop = False
        self._said_minimum_not_met = False
        self.profiler.reset()  # each run reports its own
        previous_determinism = set_determinism(self.deterministic, self.benchmark)
        status = "failed"
        # run.json of the version folder: the CLI hands in its record (any command); a Python
        # fit gets one of its own (a later test() in the same folder keeps the fit's record)
        record = self.run_record or (RunRecord("fit", command_line()) if stage == "fit" else None)
        ended_by: BaseException | None = None
        try:
            self.strategy.setup()
            use_rank_zero_versions(self.loggers, self.strategy)
            checkpoint = self._prepare(stage, model, datamodule, loaders, path)
            if record is not None:
                record.start_in_version_folder(self, path)
            if stage == "fit":
                call_hook(self, "on_fit_start")
                if checkpoint is not None:  # after on_fit_start, as in Lightning
                    restore_training_state(self, checkpoint)
                with torch.autograd.set_detect_anomaly(self.detect_anomaly):
                    fit_loop(self)
                call_hook(self, "on_fit_end")
                result = None
            elif stage == "predict":
                result = predict(self)
            else:
                result = evaluate(self, stage, verbose)
            status = "success"
            self.state.status, self.state.stage = TrainerStatus.FINISHED, None
        except TunerExit:  # a Tuner's finder ended the run: a finished one, as in Lightning
            status, result = "success", None
            self.state.status, self.state.stage = TrainerStatus.FINISHED, None
        except KeyboardInterrupt as interrupt:
            status, ended_by = "interrupted", interrupt
            self.state.status = TrainerStatus.INTERRUPTED  # the stage it stopped in is kept
            if not isinstance(interrupt, RunInterrupted):  # that one already said what it did
                info("\nDetected KeyboardInterrupt, attempting graceful shutdown ...")
            self._on_exception(model, datamodule, interrupt)
            raise
        except BaseException as error:
            ended_by = error
            self.state.status, self.state.stage = TrainerStatus.INTERRUPTED, None
            self._on_exception(model, datamodule, error)
            raise
        finally:
            try:
                self._teardown(stage, model, datamodule, status)
            finally:
                restore_determinism(previous_determinism)
                if record is not None:
                    record.finish(self, ended_by)
        return result

    def _attach(self, stage: str, model: Module | None, datamodule: DataModule | None) -> Module:
        model = unwrap_compiled(model, stage)  # torch.compile(module): the module, compiled
        if model is None:
            model = self._lightning_module
            if model is None:
                raise MisconfigurationException(
                    f"Trainer.{stage}() needs a model: pass one, or call fit() first."
                )
        if not isinstance(model, Module):
            raise MisconfigurationException(
                f"Trainer.{stage}(model=...) expects an ltrain.Module (LightningModule), "
                f"got {type(model).__name__}"
            )
        if datamodule is not None and not isinstance(datamodule, DataModule):
            raise MisconfigurationException(
                f"Trainer.{stage}(datamodule=...) expects an ltrain.DataModule, "
                f"got {type(datamodule).__name__}"
            )
        model.trainer = self
        self._lightning_module = model
        if datamodule is not None:
            datamodule.trainer = self
            self.datamodule = datamodule
        self.callbacks = order_callbacks(merge_model_callbacks(self.callbacks, model))
        self._hook_plans = {}
        self._takes_batch_idx = {}
        return model

    def _set_stage(self, stage: str) -> None:
        self.training = stage == "fit"
        self.validating = stage == "validate"
        self.testing = stage == "test"
        self.predicting = stage == "predict"

    def _prepare(
        self,
        stage: str,
        model: Module,
        datamodule: DataModule | None,
        loaders: tuple,
        ckpt_path: str | None,
    ) -> dict[str, Any] | None:
        """Everything before the stage's first hook; with `ckpt_path`, the weights are loaded
        and the checkpoint is returned for the training state, restored after on_fit_start."""
        # downloads and unpacking happen once per machine (Lightning's prepare_data_per_node),
        # or once in all; the other ranks wait, then every rank reads the files in setup
        for owner in (datamodule, model):
            if owner is None:
                continue
            per_node = getattr(owner, "prepare_data_per_node", True)
            if (self.local_rank if per_node else self.global_rank) == 0:
                owner.prepare_data()
        self.strategy.barrier()
        if datamodule is not None:
            datamodule.setup(stage)
        call_hook(self, "setup", stage)
        model.configure_model()
        self._first_compiled_step = stage == "fit" and is_compiled(model)  # its time is said
        if self.sync_batchnorm and self.strategy.distributed:  # one process: nothing to sync
            torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        self.precision_plugin.convert_module(model)
        model.to(self.strategy.root_device)
        checkpoint = restore_module(self, ckpt_path, stage) if ckpt_path is not None else None
        self._batch_transfer = batch_transfer_hooks(model, datamodule)
        load_loaders(self, stage, model, datamodule, loaders)
        log_hyperparameters(self, model)  # every stage, after the weights load (Lightning's)
        if stage == "fit":
            configure_optimizers(self, model)
            self._training_step_runner = self.strategy.wrap(model) or model.training_step
        return checkpoint

    def _on_exception(self, model: Module, dm: DataModule | None, error: BaseException) -> None:
        """A failed run tells the callbacks, then the datamodule (Lightning's module has no such hook)."""
        for callback in self.callbacks:
            callback.on_exception(self, model, error)
        if dm is not None:
            dm.on_exception(error)

    def _teardown(
        self, stage: str, model: Module, datamodule: DataModule | None, status: str
    ) -> None:
        if status == "success":  # as in Lightning, a failed run gets no teardown hooks
            if datamodule is not None:
                datamodule.teardown(stage)
            call_hook(self, "teardown", stage)
        self.results.hook = None
        if self.is_global_zero:
            self.profiler.describe(stage, self.log_dir)
        self._training_step_runner = None  # DDP's buckets are as large as the gradients
        for logger in self._writing_loggers:
            logger.finalize(status)
        self.training = self.validating = self.testing = self.predicting = False

    def _new_results(self) -> Results:
        reduce = self.strategy.reduce if self.strategy.world_size > 1 else None
        kind = BarebonesResults if self.barebones else Results
        return kind(self.callback_metrics, self.progress_bar_metrics, self.logged_metrics, reduce)
