"""`Trainer`: runs fit / validate / test / predict over a `Module`, in one readable loop.

The path from `fit()` to `loss.backward()` is a few calls deep, all in this file and precision.py:

    fit -> _run -> _fit_loop -> _train_epoch -> _train_batch -> closure -> _backward -> precision

Hook order (Lightning's; callbacks that decide from metrics run after the module's hook):

    prepare_data; setup(stage); configure_model; configure_optimizers; on_fit_start
    sanity check: on_sanity_check_start, validation loop, on_sanity_check_end
    on_train_start
    for epoch:
        on_train_epoch_start
        for batch:
            on_train_batch_start            (a module returning -1 ends the epoch)
            optimizer_step(closure): training_step, on_before_zero_grad, optimizer_zero_grad,
                on_before_backward, backward, on_after_backward,
                on_before_optimizer_step, configure_gradient_clipping, step
            step-interval schedulers (epoch-interval ones after the last batch)
            on_train_batch_end; step row to loggers every log_every_n_steps
            validation when due: on_validation_start, on_validation_epoch_start,
                (on_validation_batch_start, validation_step, on_validation_batch_end)*,
                on_validation_epoch_end, validation row, on_validation_end
        on_train_epoch_end; training epoch row; plateau schedulers
    on_train_end; on_fit_end; teardown(stage)

A checkpoint records where in this loop it was taken (`_loop_phase`: before a batch's step row and
validation, between batches, or before an epoch's row), the generators' state now and when the
epoch's data order was drawn, and the epoch's running aggregates; a resume replays exactly what
was still to come, so a run killed anywhere ends as it would have. SIGINT/SIGTERM stop at the next
point between batches, after saving last.ckpt.

The Trainer owns every counter (`current_epoch`, `global_step`) as a public attribute; callbacks
read them. Nothing is kept at module level, so a second Trainer in one process starts clean.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import math
import os
import signal
import threading
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch

from ltrain.batch import apply_to_tensors, split_samples, stack_samples
from ltrain.callbacks.base import Callback
from ltrain.callbacks.model_checkpoint import ModelCheckpoint
from ltrain.callbacks.model_summary import ModelSummary
from ltrain.callbacks.progress import ProgressBar, TQDMProgressBar
from ltrain.checkpoint import load_checkpoint, plain_data, save_checkpoint
from ltrain.console import info
from ltrain.data.datamodule import DataModule
from ltrain.errors import MisconfigurationException, NonFiniteLossError, RunInterrupted
from ltrain.loggers.base import Logger
from ltrain.loggers.csv_logs import CSVLogger
from ltrain.module import NO_OP_HOOKS, LightningOptimizer, Module
from ltrain.precision import Precision, make_precision
from ltrain.results import Results, to_floats
from ltrain.run_record import RunRecord, command_line
from ltrain.seed import rng_state, set_rng_state
from ltrain.strategies import gpu_kind, make_strategy

_STAGE_LOADER = {"fit": "train", "validate": "val", "test": "test", "predict": "predict"}


@dataclass
class LRSchedulerConfig:
    """One scheduler from `configure_optimizers` and when it steps."""

    scheduler: Any
    interval: str = "epoch"
    frequency: int = 1
    monitor: str | None = None
    strict: bool = True
    name: str | None = None

    @property
    def reduce_on_plateau(self) -> bool:
        return isinstance(self.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau)


class Trainer:
    """Trains and evaluates a `Module`; arguments and defaults are Lightning's."""

    def __init__(
        self,
        *,
        accelerator: str = "auto",
        strategy: str = "auto",
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
        val_check_interval: int | float | None = None,
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
    ) -> None:
        self.strategy = make_strategy(strategy, accelerator, devices, num_nodes)
        self.precision_plugin = make_precision(precision, self.strategy.root_device)
        self.default_root_dir = os.fspath(default_root_dir) if default_root_dir else os.getcwd()

        self.fast_dev_run = _check_fast_dev_run(fast_dev_run)
        if self.fast_dev_run:
            n = self.fast_dev_run
            max_epochs, max_steps, num_sanity_val_steps = 1, n, 0
            limit_train_batches = limit_val_batches = limit_test_batches = n
            limit_predict_batches, val_check_interval, check_val_every_n_epoch = n, 1.0, 1
            info(
                f"Running in `fast_dev_run` mode: will run the requested loop using {n} batch(es). "
                "Logging and checkpointing is suppressed."
            )
        if max_epochs is None:
            max_epochs = 1000 if max_steps == -1 and min_steps is None else -1
        _check_int("max_epochs", max_epochs, minimum=-1)
        _check_int("max_steps", max_steps, minimum=-1)
        _check_int("accumulate_grad_batches", accumulate_grad_batches, minimum=1)
        self.max_epochs = max_epochs
        self.min_epochs = min_epochs
        self.max_steps = max_steps
        self.min_steps = min_steps
        self.overfit_batches = _check_limit("overfit_batches", overfit_batches)
        if self.overfit_batches:
            limit_train_batches = limit_val_batches = self.overfit_batches
        self.limit_train_batches = _check_limit("limit_train_batches", limit_train_batches)
        self.limit_val_batches = _check_limit("limit_val_batches", limit_val_batches)
        self.limit_test_batches = _check_limit("limit_test_batches", limit_test_batches)
        self.limit_predict_batches = _check_limit("limit_predict_batches", limit_predict_batches)
        self.val_check_interval = _check_val_check_interval(val_check_interval)
        if check_val_every_n_epoch is not None:
            _check_int("check_val_every_n_epoch", check_val_every_n_epoch, minimum=1)
        self.check_val_every_n_epoch = check_val_every_n_epoch
        self.num_sanity_val_steps = 2 if num_sanity_val_steps is None else num_sanity_val_steps
        _check_int("num_sanity_val_steps", self.num_sanity_val_steps, minimum=-1)
        self.log_every_n_steps = 50 if log_every_n_steps is None else log_every_n_steps
        _check_int("log_every_n_steps", self.log_every_n_steps, minimum=0)
        self.accumulate_grad_batches = accumulate_grad_batches
        self.gradient_clip_val = gradient_clip_val
        if gradient_clip_algorithm not in (None, "norm", "value"):
            raise MisconfigurationException(
                f"gradient_clip_algorithm={gradient_clip_algorithm!r}: expected 'norm' or 'value'"
            )
        self.gradient_clip_algorithm = gradient_clip_algorithm
        if deterministic not in (None, True, False, "warn"):
            raise MisconfigurationException(
                f"deterministic={deterministic!r}: expected True, False, 'warn' or None"
            )
        self.deterministic = deterministic
        self.benchmark = benchmark
        self.inference_mode = inference_mode

        self.loggers = _make_loggers(logger, self.default_root_dir, bool(self.fast_dev_run))
        self.callbacks = _make_callbacks(
            callbacks,
            checkpointing=enable_checkpointing is not False,
            progress_bar=enable_progress_bar is not False,
            model_summary=enable_model_summary is not False,
        )

        # run state, public so callbacks can read it
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
        self.lr_scheduler_configs: list[LRSchedulerConfig] = []
        self.num_training_batches: int | float = 0
        self.num_val_batches: list[int | float] = []
        self.num_test_batches: list[int | float] = []
        self.num_predict_batches: list[int | float] = []
        self.train_dataloader: Any = None
        self.val_dataloaders: list[Any] = []
        self.test_dataloaders: list[Any] = []
        self.predict_dataloaders: list[Any] = []
        self.lightning_module: Module | None = None
        self.datamodule: DataModule | None = None

        self._lightning_optimizers: list[LightningOptimizer] = []
        self._batches_that_stepped = 0  # the logger's step: batches that ran an optimizer step
        # Where the fit loop stands, stored in checkpoints so a resume replays exactly what was
        # still to come: (phase, epoch, index of the next batch, is_last, stepped). Phases:
        # "epoch_start" (nothing pending), "batch_end" (saved in on_train_batch_end: that batch's
        # step row and validation are to come), "between_batches" (nothing pending in the epoch),
        # "epoch_end" (saved in on_train_epoch_end: the epoch row is to come).
        self._loop_phase: tuple[str, int, int, bool, bool] = ("epoch_start", 0, 0, False, False)
        self._resume: dict[str, Any] | None = None  # what _restore found, used by _train_epoch
        self._epoch_start_rng: dict[str, Any] | None = None
        # (loss, global step, epoch, batch): checked for nan/inf when the host syncs
        self._loss_checks: list[tuple[torch.Tensor, int, int, int]] = []
        self._received_signal: int | None = None
        self._batch_idx = 0
        self._results = self._new_results()
        self._hook_plans: dict[str, tuple[list[Callback], Any, list[Callback]] | object] = {}
        self._val_check_batch: float = math.inf
        self._step_output: Any = None
        self._training_step_runner: Any = None  # the module's training_step, or DDP around it
        self.run_record: RunRecord | None = None  # run.json's writer, when the CLI provides one
        self._said_minimum_not_met = False  # the min_epochs/min_steps notice is printed once a run
        self._announce()

    # ------------------------------------------------------------------ public views
    @property
    def logger(self) -> Logger | None:
        return self.loggers[0] if self.loggers else None

    @property
    def _writing_loggers(self) -> list[Logger]:
        """The loggers that write files: all of them on rank 0, none on the other ranks."""
        return self.loggers if self.is_global_zero else []

    @property
    def log_dir(self) -> str:
        if not self.loggers:
            return self.default_root_dir
        return self.loggers[0].log_dir or self.default_root_dir

    @property
    def model(self) -> Module | None:
        return self.lightning_module

    @property
    def checkpoint_callbacks(self) -> list[ModelCheckpoint]:
        return [c for c in self.callbacks if isinstance(c, ModelCheckpoint)]

    @property
    def checkpoint_callback(self) -> ModelCheckpoint | None:
        found = self.checkpoint_callbacks
        return found[0] if found else None

    @property
    def early_stopping_callback(self) -> Callback | None:
        from ltrain.callbacks.early_stopping import EarlyStopping

        return next((c for c in self.callbacks if isinstance(c, EarlyStopping)), None)

    @property
    def progress_bar_callback(self) -> ProgressBar | None:
        return next((c for c in self.callbacks if isinstance(c, ProgressBar)), None)

    @property
    def is_global_zero(self) -> bool:
        return self.strategy.is_global_zero

    @property
    def global_rank(self) -> int:
        return self.strategy.global_rank

    @property
    def local_rank(self) -> int:
        return self.strategy.local_rank

    @property
    def world_size(self) -> int:
        return self.strategy.world_size

    @property
    def device(self) -> torch.device:
        return self.strategy.root_device

    @property
    def precision(self) -> str:
        """Lightning's name: '32-true', 'bf16-mixed', ...; the object is `precision_plugin`."""
        return self.precision_plugin.name

    @property
    def estimated_stepping_batches(self) -> int | float:
        """Optimizer steps the whole fit will take (for schedulers such as OneCycleLR)."""
        if self.max_epochs == -1:
            return math.inf if self.max_steps == -1 else self.max_steps
        if self.num_training_batches == math.inf:
            return self.max_steps
        per_epoch = math.ceil(self.num_training_batches / self.accumulate_grad_batches)
        steps = per_epoch * max(self.max_epochs, 1)
        return steps if self.max_steps == -1 else min(steps, self.max_steps)

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
        if self.lightning_module is None:
            raise MisconfigurationException("save_checkpoint needs a model: call fit() first.")
        self._check_losses()  # never write a checkpoint over a good one after a nan loss
        state = self._checkpoint_state(weights_only)
        if self.is_global_zero:
            save_checkpoint(state, filepath)
        self.strategy.barrier()  # no rank reads or lists the file before it exists

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
        path = self._resolve_ckpt_path(ckpt_path) if ckpt_path is not None else None
        model = self._attach(stage, model, datamodule)
        self._set_stage(stage)
        # as in Lightning, each run starts with no metrics from the previous one
        self.callback_metrics.clear()
        self.logged_metrics.clear()
        self.progress_bar_metrics.clear()
        self.should_stop = False
        self._said_minimum_not_met = False
        previous_determinism = _set_determinism(self.deterministic, self.benchmark)
        status = "failed"
        # run.json of the version folder: the CLI hands in its record (any command); a Python
        # fit gets one of its own (a later test() in the same folder keeps the fit's record)
        record = self.run_record or (RunRecord("fit", command_line()) if stage == "fit" else None)
        ended_by: BaseException | None = None
        try:
            self.strategy.setup()
            self._agree_on_log_dirs()
            self._prepare(stage, model, datamodule, loaders)
            if path is not None:
                self._restore(path, stage)
            self._start_record(record, path)
            if stage == "fit":
                self._call_hook("on_fit_start")
                self._fit_loop()
                self._call_hook("on_fit_end")
                result = None
            elif stage == "predict":
                result = self._predict_loop()
            else:
                result = self._evaluate(stage, verbose)
            status = "success"
        except KeyboardInterrupt as interrupt:
            status, ended_by = "interrupted", interrupt
            if not isinstance(interrupt, RunInterrupted):  # that one already said what it did
                info("\nDetected KeyboardInterrupt, attempting graceful shutdown ...")
            self._call_hook("on_exception", interrupt)
            raise
        except BaseException as error:
            ended_by = error
            self._call_hook("on_exception", error)
            raise
        finally:
            try:
                self._teardown(stage, model, datamodule, status)
            finally:
                _restore_determinism(previous_determinism)
                if record is not None:
                    self._end_record(record, ended_by)
        return result

    def _attach(self, stage: str, model: Module | None, datamodule: DataModule | None) -> Module:
        if model is None:
            model = self.lightning_module
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
        self.lightning_module = model
        if datamodule is not None:
            datamodule.trainer = self
            self.datamodule = datamodule
        self.callbacks = _order_callbacks(_merge_model_callbacks(self.callbacks, model))
        self._hook_plans = {}
        return model

    def _version_folder(self) -> str | None:
        """The version folder the loggers write into, once it exists."""
        for logger in self.loggers:
            if logger.writes_version_folder:
                folder = logger.fixed_log_dir
                return folder if folder is not None and os.path.isdir(folder) else None
        return None

    def _start_record(self, record: RunRecord | None, checkpoint: str | None) -> None:
        """Write the `running` record, unless the CLI already did (it knows its folder first)."""
        folder = self._version_folder()
        if record is not None and record.folder is None and folder is not None:
            record.start(folder, self, checkpoint)

    def _end_record(self, record: RunRecord, ended_by: BaseException | None) -> None:
        """Say how the run ended (a folder made only during the run gets its record now).

        A record that cannot be written is a warning: it must not replace the run's outcome.
        """
        try:
            if record.folder is None:
                self._start_record(record, None)
            record.end(self, ended_by)
        except OSError as error:
            warnings.warn(f"could not write run.json: {error}", stacklevel=2)

    def _agree_on_log_dirs(self) -> None:
        """Every rank uses the version folder rank 0 claims (only rank 0 creates folders)."""
        if self.world_size == 1 or not self.loggers:
            return
        versions = [logger.version if self.is_global_zero else None for logger in self.loggers]
        for logger, version in zip(self.loggers, self.strategy.broadcast(versions), strict=True):
            logger.use_version(version)

    def _set_stage(self, stage: str) -> None:
        self.training = stage == "fit"
        self.validating = stage == "validate"
        self.testing = stage == "test"
        self.predicting = stage == "predict"

    def _prepare(
        self, stage: str, model: Module, datamodule: DataModule | None, loaders: tuple
    ) -> None:
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
        self._call_hook("setup", stage)
        model.configure_model()
        self.precision_plugin.convert_module(model)
        model.to(self.strategy.root_device)
        self._batch_transfer = _batch_transfer_hooks(model, datamodule)
        self._load_loaders(stage, model, datamodule, loaders)
        if stage == "fit":
            self._configure_optimizers(model)
            self._log_hyperparameters(model)
            self._training_step_runner = self.strategy.wrap(model) or model.training_step

    def _announce(self) -> None:
        if not self.is_global_zero:
            return
        device = self.strategy.root_device
        used = device.type in ("cuda", "mps")
        kind = gpu_kind()
        info(f"GPU available: {kind is not None}{f' ({kind})' if kind else ''}, used: {used}")
        info(f"Device: {device}, precision: {self.precision_plugin.name}")

    def _teardown(
        self, stage: str, model: Module, datamodule: DataModule | None, status: str
    ) -> None:
        if datamodule is not None:
            datamodule.teardown(stage)
        self._call_hook("teardown", stage)
        self._results.hook = None
        self._training_step_runner = None  # DDP's buckets are as large as the gradients
        for logger in self._writing_loggers:
            logger.finalize(status)
        self.training = self.validating = self.testing = self.predicting = False

    # ------------------------------------------------------------------ hooks
    def _call_hook(self, name: str, *args: Any) -> Any:
        """Call hook `name` on the callbacks and the module, in Lightning's order.

        Callbacks that override the hook run first, then the module, then the callbacks that
        decide from metrics (`runs_after_module`). The hook name is handed to the results
        aggregator, which decides what `self.log` may do inside it. A hook nobody overrides
        costs one dict lookup (several run every batch).
        """
        plan = self._hook_plans.get(name)
        if plan is None:
            plan = self._hook_plans[name] = self._plan_hook(name)
        if plan is _NOBODY:
            return None
        before, method, after = plan
        module = self.lightning_module
        results = self._results
        outer_hook = results.hook
        results.hook = name
        for callback in before:
            getattr(callback, name)(self, module, *args)
        output = method(*args) if method is not None else None
        for callback in after:
            getattr(callback, name)(self, module, *args)
        results.hook = outer_hook
        return output

    def _plan_hook(self, name: str) -> tuple[list[Callback], Any, list[Callback]] | object:
        """Who implements hook `name` in this run: (callbacks before, module method, after).

        `_NOBODY` when no one does, so that the dispatcher's common case is one identity test.
        """
        before, after = _split_callbacks(self.callbacks, name)
        module = self.lightning_module
        method = getattr(module, name, None)
        if name in NO_OP_HOOKS and not _overrides_hook(module, name, Module):
            method = None
        if method is None and not before and not after:
            return _NOBODY
        return before, method, after

    def _new_results(self) -> Results:
        reduce = self.strategy.reduce if self.strategy.world_size > 1 else None
        return Results(self.callback_metrics, self.progress_bar_metrics, reduce)

    # ------------------------------------------------------------------ data
    def _load_loaders(
        self, stage: str, model: Module, datamodule: DataModule | None, loaders: tuple
    ) -> None:
        if stage == "fit":
            train = self._loader_source("train", model, datamodule, loaders[0])
            if train is None:
                raise MisconfigurationException(
                    "fit() needs training data: pass train_dataloaders, a datamodule, or define "
                    "`train_dataloader()` in the module."
                )
            if self.overfit_batches:
                train = _without_shuffle(train)
            train = self.strategy.shard_loader(train, "train")
            self.train_dataloader = train
            self.num_training_batches = _num_batches(train, self.limit_train_batches, "train")
            val = self._loader_source("val", model, datamodule, loaders[1])
            if val is None and _overrides(model, "validation_step", Module):
                warnings.warn(
                    "You defined a validation_step but have no val_dataloader. Skipping val loop.",
                    stacklevel=5,  # the user's fit() call
                )
            if val is not None and not _overrides(model, "validation_step", Module):
                val = None
            self.val_dataloaders = [self.strategy.shard_loader(v, "val") for v in _as_list(val)]
            self.num_val_batches = [
                _num_batches(v, self.limit_val_batches, "val") for v in self.val_dataloaders
            ]
            self._val_check_batch = self._compute_val_check_batch()
            return
        kind = _STAGE_LOADER[stage]
        step_name = {"validate": "validation_step", "test": "test_step"}.get(stage)
        if step_name is not None and not _overrides(model, step_name, Module):
            raise MisconfigurationException(
                f"Trainer.{stage}() needs `{step_name}` to be defined in {type(model).__name__}."
            )
        found = self._loader_source(kind, model, datamodule, loaders[0])
        if found is None:
            raise MisconfigurationException(
                f"Trainer.{stage}() needs data: pass dataloaders, a datamodule, or define "
                f"`{kind}_dataloader()` in the module."
            )
        found = [self.strategy.shard_loader(loader, kind) for loader in _as_list(found)]
        limit = getattr(self, f"limit_{kind}_batches" if kind != "val" else "limit_val_batches")
        counts = [_num_batches(loader, limit, kind) for loader in found]
        attribute = {"val": "val_dataloaders"}.get(kind, f"{kind}_dataloaders")
        setattr(self, attribute, found)
        setattr(self, f"num_{kind}_batches", counts)

    def _loader_source(
        self, kind: str, model: Module, datamodule: DataModule | None, explicit: Any
    ) -> Any:
        if explicit is not None:
            return explicit
        method = f"{kind}_dataloader"
        if datamodule is not None and _overrides(datamodule, method, DataModule):
            return getattr(datamodule, method)()
        if callable(getattr(model, method, None)):
            return getattr(model, method)()
        return None

    def _compute_val_check_batch(self) -> float:
        interval, n = self.val_check_interval, self.num_training_batches
        if isinstance(interval, int) and not isinstance(interval, bool):
            if self.check_val_every_n_epoch is not None and interval > n:
                raise MisconfigurationException(
                    f"val_check_interval={interval} is more than the {n} training batches of an "
                    "epoch; use a smaller number, a fraction, or check_val_every_n_epoch=None."
                )
            return interval
        if n == math.inf:
            return math.inf
        return max(1, int(n * interval))

    def _to_device(self, batch: Any, dataloader_idx: int) -> Any:
        before, transfer, after = self._batch_transfer
        if before is not None:
            batch = before(batch, dataloader_idx)
        batch = transfer(batch, self.strategy.root_device, dataloader_idx)
        if after is not None:
            batch = after(batch, dataloader_idx)
        return self.precision_plugin.convert_input(batch)

    # ------------------------------------------------------------------ optimizers
    def _configure_optimizers(self, model: Module) -> None:
        self._results.hook = "configure_optimizers"
        optimizers, configs = _parse_optimizers(model.configure_optimizers())
        self._results.hook = None
        if model.automatic_optimization and len(optimizers) > 1:
            raise MisconfigurationException(
                f"configure_optimizers returned {len(optimizers)} optimizers, but automatic "
                "optimization steps one. Set `self.automatic_optimization = False` in __init__ "
                "and step them yourself in training_step."
            )
        if not model.automatic_optimization:
            if self.accumulate_grad_batches != 1:
                raise MisconfigurationException(
                    "accumulate_grad_batches is not supported with manual optimization; "
                    "accumulate in training_step instead."
                )
            if self.gradient_clip_val:
                raise MisconfigurationException(
                    "gradient_clip_val is not supported with manual optimization; call "
                    "self.clip_gradients(opt, ...) in training_step instead."
                )
        self.optimizers = optimizers
        self._clipping_overridden = _overrides_hook(model, "configure_gradient_clipping", Module)
        # Module's own optimizer_step / optimizer_zero_grad / backward only forward to the
        # optimizer or the loss; kept (and with a precision that does not scale the loss), the loop
        # forwards itself and skips the dispatch layers (no callback hook has these names)
        self._default_optimizer_step = not _overrides_hook(model, "optimizer_step", Module)
        self._default_zero_grad = not _overrides_hook(model, "optimizer_zero_grad", Module)
        self._default_backward = type(self.precision_plugin).backward is Precision.backward and (
            not _overrides_hook(model, "backward", Module)
        )
        self._lightning_optimizers = [LightningOptimizer(opt, self) for opt in optimizers]
        self.lr_scheduler_configs = configs

    def _optimizer_step(self, optimizer: torch.optim.Optimizer, closure: Any, **kwargs: Any) -> Any:
        """Step through the precision (hooks and clipping after the closure); counts the step."""
        automatic = self.lightning_module.automatic_optimization
        output = self.precision_plugin.optimizer_step(
            optimizer,
            closure if closure is not None else _no_closure,
            functools.partial(self._before_optimizer_step, optimizer, automatic),
            skip_without_loss=automatic,
            **kwargs,
        )
        self.global_step += 1
        return output

    def _before_optimizer_step(self, optimizer: torch.optim.Optimizer, automatic: bool) -> None:
        self._call_hook("on_before_optimizer_step", optimizer)
        # without a clip value the default hook clips nothing: skip the call unless overridden
        if automatic and (self.gradient_clip_val or self._clipping_overridden):
            self._call_hook(
                "configure_gradient_clipping",
                optimizer,
                self.gradient_clip_val,
                self.gradient_clip_algorithm,
            )

    def _backward(self, loss: torch.Tensor, *args: Any, **kwargs: Any) -> None:
        # kept and checked at the next row or checkpoint: reading it now would sync the GPU every
        # step. Backward frees the graph's buffers, so holding the loss costs a few small objects.
        self._loss_checks.append((loss, self.global_step, self.current_epoch, self._batch_idx))
        self._call_hook("on_before_backward", loss)
        if not self.lightning_module.automatic_optimization:
            self.strategy.before_manual_backward(self._training_step_runner, loss)
        if self._default_backward:
            loss.backward(*args, **kwargs)
        else:
            self.precision_plugin.backward(loss, self.lightning_module, *args, **kwargs)
        self._call_hook("on_after_backward")

    def _step_schedulers(
        self, interval: str, plateau: bool | None = None, batch_idx: int = 0
    ) -> None:
        """Step the schedulers of `interval` that are due (only plateau ones, or none, if given).

        As in Lightning, `frequency` of a step-interval scheduler counts the batches of the
        current epoch (`batch_idx + 1`), not the optimizer steps of the whole fit.
        """
        for config in self.lr_scheduler_configs:
            if config.interval != interval or plateau not in (None, config.reduce_on_plateau):
                continue
            count = batch_idx + 1 if interval == "step" else self.current_epoch + 1
            if count % config.frequency:
                continue
            metric = None
            if config.reduce_on_plateau:
                metric = self.callback_metrics.get(config.monitor)
                if metric is None:
                    if not config.strict:
                        continue
                    available = ", ".join(sorted(self.callback_metrics)) or "none"
                    raise MisconfigurationException(
                        f"ReduceLROnPlateau conditioned on metric {config.monitor!r}, which was "
                        f"not logged. Available metrics: {available}."
                    )
            self._call_hook("lr_scheduler_step", config.scheduler, metric)

    # ------------------------------------------------------------------ fit
    def _fit_loop(self) -> None:
        if self._resume is None:  # a resumed run was checked before it was interrupted
            self._run_sanity_check()
        self._call_hook("on_train_start")
        with _graceful_signals(self):
            while True:
                stop_reason = self._fit_stop_reason()
                if stop_reason is not None:
                    break
                self._train_epoch()
                self._stop_if_signaled(agree=True)
        if stop_reason and self.is_global_zero:
            info(f"`Trainer.fit` stopped: {stop_reason}.")
        self._call_hook("on_train_end")

    def _fit_stop_reason(self) -> str | None:
        """Why fitting is over, or None while it goes on ('' when should_stop was set)."""
        if self.max_steps != -1 and self.global_step >= self.max_steps:
            return f"`max_steps={self.max_steps}` reached"
        if self.max_epochs != -1 and self.current_epoch >= self.max_epochs:
            return f"`max_epochs={self.max_epochs}` reached"
        if self.should_stop:
            if self._minimum_reached():
                return ""
            # the request stands (as in Lightning): fit stops as soon as the minimum is met
            if not self._said_minimum_not_met:
                self._said_minimum_not_met = True
                info(
                    "Trainer was signaled to stop but the required "
                    f"`min_epochs={self.min_epochs!r}` or `min_steps={self.min_steps!r}` has not "
                    "been met. Training will continue..."
                )
        return None

    def _minimum_reached(self) -> bool:
        epochs_ok = self.min_epochs is None or self.current_epoch >= self.min_epochs
        steps_ok = self.min_steps is None or self.global_step >= self.min_steps
        return epochs_ok and steps_ok

    def _run_sanity_check(self) -> None:
        steps = self.num_sanity_val_steps
        if not steps or not self.val_dataloaders or not sum(self.num_val_batches):
            return
        limits = [n if steps == -1 else min(steps, n) for n in self.num_val_batches]
        self.sanity_checking = True
        self._call_hook("on_sanity_check_start")
        self._eval_loop("validation", self.val_dataloaders, limits)
        self._call_hook("on_sanity_check_end")
        self.sanity_checking = False
        # what the sanity check logged must not reach callbacks or the progress bar
        self.callback_metrics.clear()
        self.progress_bar_metrics.clear()

    def _train_epoch(self) -> None:
        model = self.lightning_module
        resume, self._resume = self._resume, None
        self._results = results = self._new_results()
        if resume is not None and resume["phase"] != "epoch_start":
            results.load_state_dict(self._own_results_state(resume["results"]), model)
        if resume is not None and resume["phase"] == "epoch_end":
            self._finish_train_epoch(results)
            return
        loader = self.train_dataloader
        _set_loader_epoch(loader, self.current_epoch)
        model.train()
        start = resume["batch"] if resume is not None else 0
        if start == 0 and resume is not None:
            set_rng_state(resume["rng"])
        self._call_hook("on_train_epoch_start")
        if start:
            # the epoch's data order came from the generators' state when its iterator was made
            set_rng_state(resume["epoch_start_rng"])
        self._epoch_start_rng = rng_state()
        batches = iter(loader)
        for _ in range(start):  # trained before the checkpoint: drawn and dropped
            next(batches, None)
        if start:
            set_rng_state(resume["rng"])
        done = False
        if resume is not None and resume["phase"] == "batch_end":
            done = self._after_train_batch(results, start - 1, resume["is_last"], resume["stepped"])
        if not done:
            for batch_idx, batch, is_last in _with_last_flag(
                batches, self.num_training_batches, start
            ):
                self.is_last_batch = is_last
                self._batch_idx = batch_idx
                batch = self._to_device(batch, 0)
                results.start_batch(batch)
                if self._call_hook("on_train_batch_start", batch, batch_idx) == -1:
                    break
                stepped = self._train_batch(batch, batch_idx, is_last)
                # counted before any hook can save a checkpoint, so a checkpoint's position is exact
                self._batches_that_stepped += stepped
                self._loop_phase = (
                    "batch_end",
                    self.current_epoch,
                    batch_idx + 1,
                    is_last,
                    stepped,
                )
                self._call_hook("on_train_batch_end", self._step_output, batch, batch_idx)
                if self._after_train_batch(results, batch_idx, is_last, stepped):
                    break
                self._stop_if_signaled(agree=(batch_idx + 1) % SIGNAL_AGREEMENT_BATCHES == 0)
        self._end_train_epoch(results)

    def _own_results_state(self, state: dict[str, Any]) -> dict[str, Any]:
        """This rank's epoch sums from a checkpoint (rank 0's if the number of ranks changed)."""
        if "per_rank" not in state:
            return state
        states = state["per_rank"]
        return states[self.global_rank] if len(states) == self.world_size else states[0]

    def _after_train_batch(
        self, results: Results, batch_idx: int, is_last: bool, stepped: bool
    ) -> bool:
        """What follows on_train_batch_end: the step row and validation when due. True ends the epoch."""
        done = self._train_epoch_done()
        if stepped:
            every = self.log_every_n_steps
            if every and self._batches_that_stepped % every == 0:
                self._log_row(results.step_values, self._batches_that_stepped - 1)
            if self._validation_due(batch_idx, is_last or done):
                self._validate_during_fit()
        self._loop_phase = ("between_batches", self.current_epoch, batch_idx + 1, is_last, stepped)
        return done

    def _train_batch(self, batch: Any, batch_idx: int, is_last: bool) -> bool:
        """Run one training batch; returns whether it completed an optimizer step."""
        model = self.lightning_module
        if not model.automatic_optimization:
            with self.precision_plugin.forward_context():
                output = self._training_step_runner(
                    *_step_args(self._results, "training_step", batch, batch_idx)
                )
            self._results.hook = None
            self._step_output = _batch_end_outputs(output)
            return True
        accumulate = self.accumulate_grad_batches
        steps_now = is_last or (batch_idx + 1) % accumulate == 0
        zero_grad_first = batch_idx % accumulate == 0
        optimizer = self.optimizers[0]

        def closure() -> torch.Tensor | None:
            with self.precision_plugin.forward_context():
                output = self._training_step_runner(
                    *_step_args(self._results, "training_step", batch, batch_idx)
                )
            self._results.hook = None
            loss = _training_loss(output)
            self._step_output = _batch_end_outputs(output)
            if zero_grad_first:
                self._call_hook("on_before_zero_grad", optimizer)
                if self._default_zero_grad:
                    optimizer.zero_grad()
                else:
                    self._call_hook("optimizer_zero_grad", self.current_epoch, batch_idx, optimizer)
            if loss is not None:
                self._backward(loss / accumulate if accumulate > 1 else loss)
            return loss

        if not steps_now:
            with self._no_gradient_sync():
                closure()
            return False
        if self._default_optimizer_step:
            self._optimizer_step(optimizer, closure)
        else:
            self._call_hook(
                "optimizer_step",
                self.current_epoch,
                batch_idx,
                self._lightning_optimizers[0],
                closure,
            )
        if self.lr_scheduler_configs:
            self._step_schedulers("step", batch_idx=batch_idx)
            if is_last or self._train_epoch_done():
                self._step_schedulers("epoch", plateau=False)
        return True

    def _no_gradient_sync(self) -> Any:
        """While gradients accumulate, DDP need not average them: only the stepping batch does."""
        no_sync = getattr(self._training_step_runner, "no_sync", None)
        return no_sync() if no_sync is not None else contextlib.nullcontext()

    def _train_epoch_done(self) -> bool:
        if self.max_steps != -1 and self.global_step >= self.max_steps:
            return True
        return self.should_stop and self._minimum_reached()

    def _validation_due(self, batch_idx: int, is_last: bool) -> bool:
        if not self.val_dataloaders or not sum(self.num_val_batches):
            return False
        every = self.check_val_every_n_epoch
        if every is not None and (self.current_epoch + 1) % every:
            return False
        check = self._val_check_batch
        if check == math.inf or check >= self.num_training_batches:
            return is_last
        index = batch_idx if every is not None else self._batches_that_stepped - 1
        return (index + 1) % check == 0

    def _validate_during_fit(self) -> None:
        model = self.lightning_module
        model.on_validation_model_zero_grad()
        train_results = self._results
        self._eval_loop("validation", self.val_dataloaders, self.num_val_batches)
        self._results = train_results
        model.train()

    def _end_train_epoch(self, results: Results) -> None:
        results.start_batch(None)
        results.epoch_values()  # callbacks in on_train_epoch_end see this epoch's values
        self._loop_phase = ("epoch_end", self.current_epoch, 0, False, False)
        self._call_hook("on_train_epoch_end")
        self._finish_train_epoch(results)

    def _finish_train_epoch(self, results: Results) -> None:
        """What follows on_train_epoch_end: the epoch row, the epoch count, plateau schedulers."""
        self._check_losses()
        logged, _ = results.epoch_values()
        if logged:
            self._log_row(logged, self._batches_that_stepped - 1)
        for logger in self._writing_loggers:
            logger.save()
        self.current_epoch += 1
        if self.lr_scheduler_configs and self.lightning_module.automatic_optimization:
            self._step_schedulers("epoch", plateau=True)
        self._loop_phase = ("epoch_start", self.current_epoch, 0, False, False)

    # ------------------------------------------------------------------ safety
    def _check_losses(self) -> None:
        """Raise if a loss since the last check was nan/inf, naming where (one host sync)."""
        checks, self._loss_checks = self._loss_checks, []
        finite = [True]
        if checks:
            with torch.no_grad():
                finite = torch.isfinite(torch.stack([c[0].float() for c in checks])).tolist()
        # data-parallel ranks stop together, or the others would wait in their next collective
        if self.world_size > 1 and self.strategy.reduce_boolean_decision(all(finite), all=True):
            return
        if all(finite):
            if self.world_size == 1:
                return
            raise NonFiniteLossError(
                f"the loss was nan or inf on another rank by global step {self.global_step}; "
                "training stopped and no checkpoint was written after it."
            )
        _, step, epoch, batch_idx = checks[finite.index(False)]
        raise NonFiniteLossError(
            f"the loss was nan or inf at global step {step} (epoch {epoch}, batch {batch_idx}); "
            "training stopped and no checkpoint was written after it. "
            + (self._half_eps_hint() or "Lower the learning rate, clip gradients "
               "(gradient_clip_val) or check the data.")
        )  # fmt: skip

    def _half_eps_hint(self) -> str | None:
        """Why a '16-true' run with Adam's default eps diverges at once, when that is the case:
        its eps (1e-8) is 0 in float16, so a parameter whose gradient is 0 divides 0 by 0."""
        if self.precision_plugin.name != "16-true":
            return None
        tiny = torch.finfo(torch.float16).tiny
        for optimizer in self.optimizers:
            for group in optimizer.param_groups:
                eps = group.get("eps")
                if isinstance(eps, float) and 0 <= eps < tiny:
                    return (
                        f"Under precision='16-true' the optimizer's eps={eps:g} is below float16's "
                        f"smallest normal number ({tiny:.1e}): give it eps=1e-4, or use "
                        "precision='16-mixed' or 'bf16-true'."
                    )
        return None

    def _stop_if_signaled(self, agree: bool) -> None:
        """After SIGINT/SIGTERM, stop at this consistent point: save last.ckpt, flush, exit.

        With several processes, all must stop after the same batch, so they compare what they
        received only at points where `agree` is True (every SIGNAL_AGREEMENT_BATCHES batches
        and at epoch ends): one small collective there instead of one every batch.
        """
        signum = self._received_signal
        if self.world_size > 1:
            if not agree:
                return
            flag = torch.tensor(float(signum or 0), device=self.strategy.root_device)
            signum = int(self.strategy.reduce(flag, "max").item()) or None
        if signum is None:
            return
        path = self._save_resume_checkpoint()
        for logger in self._writing_loggers:
            logger.save()
        name = signal.Signals(signum).name
        info(f"Received {name}: saved {path}; resume with trainer.fit(..., ckpt_path={path!r}).")
        raise RunInterrupted(signum, path)

    def _save_resume_checkpoint(self) -> str:
        callback = self.checkpoint_callback
        if callback is not None and callback.dirpath:
            return callback.save_last_checkpoint(self)
        path = os.path.join(self.log_dir, "checkpoints", "last.ckpt")
        self.save_checkpoint(path)
        return path

    # ------------------------------------------------------------------ evaluation
    def _evaluate(self, stage: str, verbose: bool) -> list[dict[str, float]]:
        kind = "validation" if stage == "validate" else "test"
        loaders = self.val_dataloaders if stage == "validate" else self.test_dataloaders
        counts = self.num_val_batches if stage == "validate" else self.num_test_batches
        per_loader = self._eval_loop(kind, loaders, counts)
        if verbose and self.is_global_zero:
            _print_results_table("Validate" if stage == "validate" else "Test", per_loader)
        return per_loader

    def _eval_loop(
        self, kind: str, loaders: list[Any], counts: list[int | float]
    ) -> list[dict[str, float]]:
        """One validation or test run over every loader; returns each loader's epoch metrics."""
        model = self.lightning_module
        was_training = model.training
        model.eval()
        self._results = results = self._new_results()
        # during fit a row belongs to the last trained batch; after it, to global_step
        row_step = self._batches_that_stepped - 1 if self.training else self._batches_that_stepped
        several = len(loaders) > 1
        if several:
            _require_dataloader_idx(model, f"{kind}_step")
        context = torch.inference_mode() if self.inference_mode else torch.no_grad()
        with context:
            self._call_hook(f"on_{kind}_start")
            self._call_hook(f"on_{kind}_epoch_start")
            step_name = f"{kind}_step"
            for loader_idx, (loader, count) in enumerate(zip(loaders, counts, strict=True)):
                extra = (loader_idx,) if several else ()
                for batch_idx, batch, _ in _with_last_flag(iter(loader), count):
                    batch = self._to_device(batch, loader_idx)
                    results.start_batch(batch, loader_idx if several else None)
                    self._call_hook(f"on_{kind}_batch_start", batch, batch_idx, *extra)
                    with self.precision_plugin.forward_context():
                        output = getattr(model, step_name)(
                            *_step_args(results, step_name, batch, batch_idx), *extra
                        )
                    results.hook = None
                    self._call_hook(f"on_{kind}_batch_end", output, batch, batch_idx, *extra)
                    if results.step_values and not self.sanity_checking:
                        self._log_row(results.step_values, row_step)
            results.start_batch(None)
            results.epoch_values()
            self._call_hook(f"on_{kind}_epoch_end")
            logged, _ = results.epoch_values()
            if logged and not self.sanity_checking:
                self._log_row(logged, row_step)
            self._call_hook(f"on_{kind}_end")
        model.train(was_training)
        # what validate()/test() return and print is the loggers' epoch row, as in Lightning
        floats = to_floats(logged) if logged else {}
        return [_metrics_of_loader(floats, i, several) for i in range(len(loaders))]

    # ------------------------------------------------------------------ predict
    def _predict_loop(self) -> list[Any] | None:
        model = self.lightning_module
        model.eval()
        self._results = results = self._new_results()
        several = len(self.predict_dataloaders) > 1
        if several:
            _require_dataloader_idx(model, "predict_step")
        keep = self._return_predictions
        all_outputs: list[list[Any]] = []
        with torch.inference_mode() if self.inference_mode else torch.no_grad():
            self._call_hook("on_predict_start")
            self._call_hook("on_predict_epoch_start")
            for loader_idx, (loader, count) in enumerate(
                zip(self.predict_dataloaders, self.num_predict_batches, strict=True)
            ):
                extra = (loader_idx,) if several else ()
                outputs: list[Any] = []
                for batch_idx, batch, _ in _with_last_flag(iter(loader), count):
                    batch = self._to_device(batch, loader_idx)
                    results.start_batch(batch)
                    self._call_hook("on_predict_batch_start", batch, batch_idx, *extra)
                    with self.precision_plugin.forward_context():
                        output = model.predict_step(
                            *_step_args(results, "predict_step", batch, batch_idx), *extra
                        )
                    results.hook = None
                    self._call_hook("on_predict_batch_end", output, batch, batch_idx, *extra)
                    if keep:
                        outputs.append(output)
                if keep and self.world_size > 1:
                    outputs = self._gather_predictions(outputs, loader)
                all_outputs.append(outputs)
            self._call_hook("on_predict_epoch_end")
            self._call_hook("on_predict_end")
        if not keep:
            return None
        return all_outputs if several else all_outputs[0]

    def _gather_predictions(self, outputs: list[Any], loader: Any) -> list[Any]:
        """On rank 0, every rank's predictions in the data set's order, in batches of this
        loader's batch size (padding repeats dropped); the other ranks keep their own.

        A loader that was not split (every rank predicted everything) keeps rank 0's own; one
        whose outputs cannot be cut into samples gives the ranks' batches in rank order.
        """
        indices = _sample_indices(loader)
        if indices is None:
            return outputs
        size = getattr(loader, "batch_size", None)
        samples: list[Any] | None = []
        for number, output in enumerate(outputs, start=1):
            split = split_samples(output)
            # one entry per sample: full batches hold `size` (the first dim is the batch's)
            fits = split is not None and (number == len(outputs) or len(split) == size)
            if samples is None or not fits:
                samples = None
                continue
            samples.extend(split)
        if samples is not None and len(samples) > len(indices):
            samples = None
        if samples is None:
            mine: tuple[str, Any] = ("batches", outputs)
        else:
            to_cpu = partial(apply_to_tensors, fn=lambda t: t.cpu())
            mine = ("samples", list(zip(indices, map(to_cpu, samples), strict=False)))
        everyone = self.strategy.gather_objects(mine)
        if not self.is_global_zero:
            return outputs
        if any(kind != "samples" for kind, _ in everyone):
            return [output for _, part in everyone for output in part]
        by_index: dict[int, Any] = {}
        for _, part in everyone:
            for index, sample in part:
                by_index.setdefault(index, sample)
        ordered = [by_index[i] for i in sorted(by_index)]
        size = size or len(ordered)
        return [stack_samples(ordered[i : i + size]) for i in range(0, len(ordered), size)]

    # ------------------------------------------------------------------ loggers
    def _log_row(self, values: Mapping[str, torch.Tensor], step: int) -> None:
        """Send one row to every logger; the single point where logged tensors become floats."""
        self._check_losses()
        if not self.loggers or not values:
            return
        row: dict[str, Any] = to_floats(values)
        for key, value in row.items():
            self.logged_metrics[key] = torch.tensor(value)
        row["epoch"] = self.current_epoch
        for logger in self._writing_loggers:
            logger.log_metrics(row, step)

    def _log_hyperparameters(self, model: Module) -> None:
        if not self.loggers or not model._log_hyperparams or not model.hparams:
            return
        for logger in self._writing_loggers:
            logger.log_hyperparams(dict(model.hparams_initial))

    # ------------------------------------------------------------------ checkpoints
    def _checkpoint_state(self, weights_only: bool) -> dict[str, Any]:
        from ltrain import __version__

        model = self.lightning_module
        state: dict[str, Any] = {
            "ltrain_version": __version__,
            "epoch": self.current_epoch,
            "global_step": self.global_step,
            "state_dict": model.state_dict(),
            "loops": self._loop_state(),
            "precision_name": self.precision_plugin.name,
            "device": str(self.strategy.root_device),
        }
        hparams = _plain_items(model.hparams_initial)
        if hparams:
            state["hyper_parameters"] = hparams
        if not weights_only:
            state["rng"] = rng_state()
            state["loggers"] = [logger.state_dict() for logger in self.loggers]
            state["optimizer_states"] = [opt.state_dict() for opt in self.optimizers]
            state["lr_schedulers"] = [c.scheduler.state_dict() for c in self.lr_scheduler_configs]
            state["precision"] = self.precision_plugin.state_dict()
            state["callbacks"] = {
                c.state_key: c.state_dict() for c in self.callbacks if c.state_dict()
            }
            # Lightning's order: the callbacks (full checkpoints only), then the module
            for callback in self.callbacks:
                callback.on_save_checkpoint(self, model, state)
        model.on_save_checkpoint(state)
        return state

    def _loop_state(self) -> dict[str, Any]:
        phase, epoch, batch, is_last, stepped = self._loop_phase
        loops: dict[str, Any] = {
            "phase": phase,
            "epoch": epoch,
            "batch": batch,
            "is_last": is_last,
            "stepped": stepped,
            "batches_that_stepped": self._batches_that_stepped,
            "should_stop": self.should_stop,
            "callback_metrics": dict(self.callback_metrics),
            "progress_bar_metrics": dict(self.progress_bar_metrics),
        }
        if phase != "epoch_start" and self.training:
            results = self._results.state_dict(self.lightning_module)
            if self.world_size > 1:  # each rank's partial sums: a resumed rank takes its own
                on_cpu = apply_to_tensors(results, lambda t: t.cpu())
                results = {"per_rank": self.strategy.gather_objects(on_cpu)}
            loops["results"] = results
            if batch:
                loops["epoch_start_rng"] = self._epoch_start_rng
        return loops

    def _restore(self, path: str, stage: str) -> None:
        # Read on the host: optimizers move their state next to each parameter themselves and keep
        # a non-capturable Adam's step counts on the CPU (on the GPU every step would read them back
        # with .item()), and generator states are CPU tensors. Only the loop's own tensors (epoch
        # sums, metric states, reported values) go to the device, where the run adds to them.
        checkpoint = load_checkpoint(path, map_location="cpu")
        model = self.lightning_module
        model.on_load_checkpoint(checkpoint)
        for callback in self.callbacks:
            callback.on_load_checkpoint(self, model, checkpoint)
        try:
            model.load_state_dict(checkpoint["state_dict"])
        except RuntimeError as error:  # torch lists every key on many lines: keep the first fact
            detail = " ".join(str(error).split("\n", 2)[1:2]).strip()
            raise MisconfigurationException(
                f"{path}: its weights do not fit {type(model).__name__} ({detail})"
            ) from None
        if stage != "fit":
            return
        missing = [k for k in ("optimizer_states", "loops", "rng") if k not in checkpoint]
        if missing:
            raise MisconfigurationException(
                f"{path}: cannot resume training from it (no {', '.join(missing)}; a weights-only "
                "or foreign checkpoint); load its weights with validate/test instead"
            )
        states = checkpoint["optimizer_states"]
        for optimizer, state in zip(self.optimizers, states, strict=False):
            optimizer.load_state_dict(state)
        for config, state in zip(
            self.lr_scheduler_configs, checkpoint.get("lr_schedulers", []), strict=False
        ):
            config.scheduler.load_state_dict(state)
        self.precision_plugin.load_state_dict(checkpoint.get("precision", {}))
        callback_states = checkpoint.get("callbacks", {})
        for callback in self.callbacks:
            if callback.state_key in callback_states:
                callback.load_state_dict(callback_states[callback.state_key])
        self.global_step = int(checkpoint["global_step"])
        device = self.strategy.root_device
        loops = apply_to_tensors(checkpoint["loops"], lambda t: t.to(device))
        self._batches_that_stepped = int(loops["batches_that_stepped"])
        self.current_epoch = int(loops["epoch"])
        self.should_stop = bool(loops["should_stop"])
        self.callback_metrics.update(loops["callback_metrics"])
        self.progress_bar_metrics.update(loops["progress_bar_metrics"])
        for logger, state in zip(
            self._writing_loggers, checkpoint.get("loggers", []), strict=False
        ):
            logger.load_state_dict(state)
        self._resume = {**loops, "rng": checkpoint["rng"]}
        self._loop_phase = (
            loops["phase"],
            self.current_epoch,
            int(loops["batch"]),
            loops["is_last"],
            loops["stepped"],
        )

    def _resolve_ckpt_path(self, ckpt_path: str) -> str:
        if ckpt_path in ("best", "last"):
            callback = self.checkpoint_callback
            path = None
            if callback is not None:
                path = callback.best_model_path if ckpt_path == "best" else callback.last_model_path
            if not path and ckpt_path == "last":
                # a new trainer resuming a run: its logger's version folder holds last.ckpt (asked
                # without claiming a new version folder, which a failed lookup would leave empty)
                folder = callback.dirpath if callback else None
                if folder is None:
                    log_dir = self.loggers[0].fixed_log_dir if self.loggers else self.log_dir
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


# ---------------------------------------------------------------------- helpers
_END = object()
_NOBODY = object()  # the plan of a hook that neither the module nor a callback implements
SIGNAL_AGREEMENT_BATCHES = 10  # how often data-parallel ranks compare received signals


@contextlib.contextmanager
def _graceful_signals(trainer: Trainer) -> Iterator[None]:
    """During fit, SIGINT/SIGTERM ask the loop to stop at its next consistent point.

    A second signal gets the previous handler (a second Ctrl-C interrupts at once).
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}

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


def _no_closure() -> None:
    return None


def _sample_indices(loader: Any) -> list[int] | None:
    """The data set indices a sharded loader visits, in order (None when it is not sharded)."""
    from ltrain.data.loader import TensorLoader

    if isinstance(loader, TensorLoader):
        order = loader._order(loader.epoch)
        return list(range(loader.num_samples)) if order is None else order.tolist()
    from torch.utils.data import DistributedSampler

    sampler = getattr(loader, "sampler", None)
    if isinstance(sampler, DistributedSampler):
        return list(iter(sampler))
    return None


def _step_args(results: Results, hook: str, batch: Any, batch_idx: int) -> tuple[Any, int]:
    """Mark `hook` as the one logging, and return the step's arguments."""
    results.hook = hook
    return batch, batch_idx


def _require_dataloader_idx(model: Module, step_name: str) -> None:
    """Several loaders pass `dataloader_idx` to the step: say so before a TypeError would."""
    parameters = inspect.signature(getattr(model, step_name)).parameters
    if "dataloader_idx" in parameters or any(
        p.kind == inspect.Parameter.VAR_POSITIONAL for p in parameters.values()
    ):
        return
    raise MisconfigurationException(
        f"You provided multiple dataloaders, but no `dataloader_idx` argument in "
        f"`{type(model).__name__}.{step_name}()`. Try adding `dataloader_idx=0` to its signature."
    )


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


def _with_last_flag(
    batches: Iterator[Any], limit: int | float, start: int = 0
) -> Iterator[tuple[int, Any, bool]]:
    """Yield (index, batch, is_last) from `start` until `limit`, looking one batch ahead."""
    if limit <= start:
        return
    batch = next(batches, _END)
    index = start
    while batch is not _END:
        following = _END if index + 1 >= limit else next(batches, _END)
        yield index, batch, following is _END
        batch = following
        index += 1


def _num_batches(loader: Any, limit: int | float, kind: str) -> int | float:
    try:
        length: int | float = len(loader)
    except TypeError:
        length = math.inf
    if isinstance(limit, int) and not isinstance(limit, bool):
        return min(length, limit)
    if limit == 1.0:
        return length
    if length == math.inf:
        raise MisconfigurationException(
            f"limit_{kind}_batches={limit} is a fraction, but the {kind} loader has no length; "
            "use an int number of batches."
        )
    count = int(length * limit)
    if limit > 0 and count == 0:
        raise MisconfigurationException(
            f"limit_{kind}_batches={limit} of {length} batches is less than one batch; "
            "increase it or use an int."
        )
    return count


def _set_loader_epoch(loader: Any, epoch: int) -> None:
    """Give the loader (or its sampler) the epoch, so each epoch shuffles differently but reproducibly."""
    for candidate in (
        loader,
        getattr(loader, "sampler", None),
        getattr(loader, "batch_sampler", None),
    ):
        set_epoch = getattr(candidate, "set_epoch", None)
        if callable(set_epoch):
            set_epoch(epoch)
            return


def _without_shuffle(loader: Any) -> Any:
    """The same data in a fixed order (for overfit_batches)."""
    from ltrain.data.loader import TensorLoader

    if isinstance(loader, TensorLoader):
        return TensorLoader(
            *loader.tensors, batch_size=loader.batch_size, shuffle=False, drop_last=loader.drop_last
        )
    if isinstance(loader, torch.utils.data.DataLoader) and isinstance(
        loader.sampler, torch.utils.data.RandomSampler
    ):
        return torch.utils.data.DataLoader(
            loader.dataset,
            batch_size=loader.batch_size,
            shuffle=False,
            num_workers=loader.num_workers,
            collate_fn=loader.collate_fn,
            pin_memory=loader.pin_memory,
            drop_last=loader.drop_last,
        )
    return loader


def _as_list(loaders: Any) -> list[Any]:
    if loaders is None:
        return []
    if isinstance(loaders, (list, tuple)):
        return list(loaders)
    if isinstance(loaders, Mapping):
        raise MisconfigurationException(
            "dataloaders given as a dict are not supported; pass a list."
        )
    return [loaders]


def _overrides(obj: Any, name: str, base: type) -> bool:
    method = getattr(type(obj), name, None)
    return method is not None and method is not getattr(base, name, None)


def _batch_transfer_hooks(model: Module, datamodule: DataModule | None) -> tuple[Any, Any, Any]:
    """Lightning's rule: a datamodule's batch hook wins over the module's; unset hooks are skipped."""

    def pick(name: str) -> Any:
        if datamodule is not None and _overrides(datamodule, name, DataModule):
            return getattr(datamodule, name)
        if _overrides(model, name, Module):
            return getattr(model, name)
        return None

    return (
        pick("on_before_batch_transfer"),
        model.transfer_batch_to_device,
        pick("on_after_batch_transfer"),
    )


def _split_callbacks(callbacks: list[Callback], name: str) -> tuple[list[Callback], list[Callback]]:
    if getattr(Callback, name, None) is None:
        return [], []
    overriding = [c for c in callbacks if _overrides_hook(c, name, Callback)]
    return (
        [c for c in overriding if not c.runs_after_module],
        [c for c in overriding if c.runs_after_module],
    )


def _overrides_hook(obj: Any, name: str, base: type) -> bool:
    """`obj` implements `name` itself: in its class, or as an attribute set on the instance."""
    return name in vars(obj) or getattr(type(obj), name, None) is not getattr(base, name, None)


def _merge_model_callbacks(callbacks: list[Callback], model: Module) -> list[Callback]:
    """Lightning's rule: a callback from `configure_callbacks` replaces the trainer's of its type.

    Called on every attach, so callbacks from an earlier call are replaced rather than doubled.
    """
    returned = model.configure_callbacks()
    if not returned:
        return callbacks
    from_model = list(returned) if isinstance(returned, (list, tuple)) else [returned]
    replaced = {
        type(c)
        for c in callbacks
        if type(c) is not Callback and any(isinstance(m, type(c)) for m in from_model)
    }
    if replaced:
        info(
            "The following callbacks returned in `LightningModule.configure_callbacks` will "
            f"override existing callbacks passed to Trainer: "
            f"{', '.join(sorted(t.__name__ for t in replaced))}"
        )
    return [c for c in callbacks if type(c) not in replaced] + from_model


def _order_callbacks(callbacks: list[Callback]) -> list[Callback]:
    """Checkpointing last, as in Lightning, so it saves what other callbacks already updated."""
    return [c for c in callbacks if not isinstance(c, ModelCheckpoint)] + [
        c for c in callbacks if isinstance(c, ModelCheckpoint)
    ]


def _make_callbacks(
    callbacks: Callback | list[Callback] | None,
    *,
    checkpointing: bool,
    progress_bar: bool,
    model_summary: bool,
) -> list[Callback]:
    given = [callbacks] if isinstance(callbacks, Callback) else list(callbacks or [])
    for callback in given:
        if not isinstance(callback, Callback):
            raise MisconfigurationException(
                f"callbacks: {type(callback).__name__} is not an ltrain Callback"
            )
    bars = [c for c in given if isinstance(c, ProgressBar)]
    if progress_bar and not bars:
        given.append(TQDMProgressBar())
    if not progress_bar and bars:
        raise MisconfigurationException(
            f"enable_progress_bar=False but a {type(bars[0]).__name__} is in callbacks; "
            "remove one of them."
        )
    if model_summary and not any(isinstance(c, ModelSummary) for c in given):
        given.append(ModelSummary())
    if checkpointing and not any(isinstance(c, ModelCheckpoint) for c in given):
        given.append(ModelCheckpoint())
    if not checkpointing and any(isinstance(c, ModelCheckpoint) for c in given):
        raise MisconfigurationException(
            "enable_checkpointing=False but a ModelCheckpoint is in callbacks; remove one of them."
        )
    return _order_callbacks(given)


def _make_loggers(logger: Any, default_root_dir: str, fast_dev_run: bool) -> list[Logger]:
    if fast_dev_run or logger is False:
        return []
    if logger is None or logger is True:
        return [CSVLogger(save_dir=default_root_dir)]
    loggers = list(logger) if isinstance(logger, (list, tuple)) else [logger]
    for item in loggers:
        if not isinstance(item, Logger):
            raise MisconfigurationException(
                f"logger: {type(item).__name__} is not an ltrain Logger (or use True/False)"
            )
    from ltrain.loggers.base import share_version_folder

    share_version_folder(loggers)  # CSV + TensorBoard under one save_dir/name: one version_N
    return loggers


def _parse_optimizers(returned: Any) -> tuple[list[torch.optim.Optimizer], list[LRSchedulerConfig]]:
    """Lightning's `configure_optimizers` forms: an optimizer, a list, ([opts], [scheds]), a dict."""
    if isinstance(returned, torch.optim.Optimizer):
        return [returned], []
    if isinstance(returned, Mapping):
        return _parse_optimizer_dict(returned)
    if isinstance(returned, (list, tuple)):
        if (
            len(returned) == 2
            and isinstance(returned[0], (list, tuple))
            and isinstance(returned[1], (list, tuple))
        ):
            optimizers = list(returned[0])
            configs = [_scheduler_config(s) for s in returned[1]]
            _check_optimizers(optimizers)
            return optimizers, configs
        if all(isinstance(item, Mapping) for item in returned):
            optimizers, configs = [], []
            for item in returned:
                opts, confs = _parse_optimizer_dict(item)
                optimizers += opts
                configs += confs
            return optimizers, configs
        optimizers = list(returned)
        _check_optimizers(optimizers)
        return optimizers, []
    raise MisconfigurationException(
        "configure_optimizers must return an optimizer, a list of optimizers, "
        f"([optimizers], [schedulers]) or a dict with 'optimizer'; got {type(returned).__name__}"
    )


def _parse_optimizer_dict(returned: Mapping[str, Any]) -> tuple[list[Any], list[LRSchedulerConfig]]:
    unknown = set(returned) - {"optimizer", "lr_scheduler", "monitor"}
    if "optimizer" not in returned or unknown:
        raise MisconfigurationException(
            "configure_optimizers returned a dict; it needs 'optimizer' and may have "
            f"'lr_scheduler' and 'monitor' (got keys {sorted(returned)})"
        )
    optimizers = [returned["optimizer"]]
    _check_optimizers(optimizers)
    scheduler = returned.get("lr_scheduler")
    if scheduler is None:
        return optimizers, []
    return optimizers, [_scheduler_config(scheduler, returned.get("monitor"))]


def _scheduler_config(scheduler: Any, monitor: str | None = None) -> LRSchedulerConfig:
    if isinstance(scheduler, Mapping):
        allowed = {"scheduler", "interval", "frequency", "monitor", "strict", "name"}
        if "scheduler" not in scheduler or set(scheduler) - allowed:
            raise MisconfigurationException(
                f"lr_scheduler dict needs 'scheduler' and may have {sorted(allowed - {'scheduler'})}"
                f"; got keys {sorted(scheduler)}"
            )
        config = LRSchedulerConfig(**{"monitor": monitor, **scheduler})
    else:
        config = LRSchedulerConfig(scheduler=scheduler, monitor=monitor)
    if config.interval not in ("epoch", "step"):
        raise MisconfigurationException(
            f"lr_scheduler interval={config.interval!r}: expected 'epoch' or 'step'"
        )
    if not isinstance(config.frequency, int) or config.frequency < 1:
        raise MisconfigurationException(
            f"lr_scheduler frequency={config.frequency!r}: expected an int >= 1"
        )
    if config.reduce_on_plateau and config.monitor is None:
        raise MisconfigurationException(
            "ReduceLROnPlateau needs a metric to watch: return {'optimizer': opt, 'lr_scheduler': "
            "{'scheduler': sched, 'monitor': 'valid_loss'}}."
        )
    if not hasattr(config.scheduler, "step") or not hasattr(config.scheduler, "state_dict"):
        raise MisconfigurationException(
            f"lr_scheduler: {type(config.scheduler).__name__} is not a learning-rate scheduler"
        )
    return config


def _check_optimizers(optimizers: list[Any]) -> None:
    for optimizer in optimizers:
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise MisconfigurationException(
                f"configure_optimizers returned a {type(optimizer).__name__} where an optimizer "
                "was expected"
            )


def _metrics_of_loader(floats: dict[str, float], index: int, several: bool) -> dict[str, float]:
    if not several:
        return dict(floats)
    own = f"/dataloader_idx_{index}"
    return {k: v for k, v in floats.items() if "/dataloader_idx_" not in k or k.endswith(own)}


def _print_results_table(title: str, per_loader: list[dict[str, float]]) -> None:
    if not any(per_loader):
        return
    names = sorted({k for metrics in per_loader for k in metrics})
    headers = [f"{title} metric"] + [f"DataLoader {i}" for i in range(len(per_loader))]
    rows = [[name] + [repr(m[name]) if name in m else "" for m in per_loader] for name in names]
    widths = [max(len(r[i]) for r in [headers, *rows]) + 8 for i in range(len(headers))]
    line = "─" * sum(widths)
    out = [line, "".join(h.center(w) for h, w in zip(headers, widths, strict=True)), line]
    out += ["".join(c.center(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    out.append(line)
    info("\n".join(out))


def _plain_items(hparams: Mapping[str, Any]) -> dict[str, Any]:
    plain = {}
    for key, value in hparams.items():
        try:
            plain[key] = plain_data(value)
        except TypeError:
            continue
    return plain


def _check_int(name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise MisconfigurationException(f"{name}={value!r}: expected an int >= {minimum}")


def _check_limit(name: str, value: Any) -> int | float:
    if value is None:
        return 1.0
    if isinstance(value, bool):
        raise MisconfigurationException(
            f"{name}={value!r}: expected an int >= 0 or a float in [0, 1]"
        )
    if isinstance(value, int) and value >= 0:
        return value
    if isinstance(value, float) and 0.0 <= value <= 1.0:
        return value
    raise MisconfigurationException(
        f"{name}={value!r}: expected an int number of batches >= 0 or a fraction in [0.0, 1.0]"
    )


def _check_val_check_interval(value: Any) -> int | float:
    if value is None:
        return 1.0
    if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
        return value
    if isinstance(value, float) and 0.0 < value <= 1.0:
        return value
    raise MisconfigurationException(
        f"val_check_interval={value!r}: expected a fraction in (0.0, 1.0] of an epoch or an int "
        "number of batches >= 1"
    )


def _check_fast_dev_run(value: Any) -> int:
    if value is True:
        return 1
    if value is False or value is None:
        return 0
    if isinstance(value, int) and value >= 0:
        return value
    raise MisconfigurationException(f"fast_dev_run={value!r}: expected a bool or an int >= 0")


def _set_determinism(deterministic: Any, benchmark: bool | None) -> tuple[bool, bool, bool]:
    """Apply the run's determinism settings; returns the previous ones to restore afterwards."""
    previous = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
        torch.backends.cudnn.benchmark,
    )
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=deterministic == "warn")
    if benchmark is not None:
        torch.backends.cudnn.benchmark = benchmark
    elif deterministic:
        torch.backends.cudnn.benchmark = False
    return previous


def _restore_determinism(previous: tuple[bool, bool, bool]) -> None:
    enabled, warn_only, benchmark = previous
    torch.use_deterministic_algorithms(enabled, warn_only=warn_only)
    torch.backends.cudnn.benchmark = benchmark
