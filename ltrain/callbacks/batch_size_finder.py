"""BatchSizeFinder: the largest batch size that runs without running out of memory, as in Lightning.

Starting from `init_val`, each size is tried for `steps_per_trial` steps of the stage being run
(a private Trainer on the user's device and precision, with no callbacks or loggers); `'power'`
doubles the size until a trial runs out of memory (or `max_trials`, `max_val` or the dataset's
length stops it), `'binsearch'` then halves the interval between the last size that ran and the
first that did not, and takes `margin` off the result. The attribute `batch_arg_name` is looked up
where Lightning looks (the module, its hparams, the datamodule, its hparams; the last one holding
it is read, all are set). Afterwards the weights and every random generator are put back.
"""

from __future__ import annotations

import contextlib
import copy
import gc
import logging
import warnings
from collections.abc import Iterator, Sized
from typing import Any

from ltrain.callbacks.base import Callback
from ltrain.console import info
from ltrain.errors import MisconfigurationException, TunerExit

MODES = ("power", "binsearch")


def is_oom_error(error: BaseException) -> bool:
    """Out of memory as Lightning recognises it: CUDA's (torch.cuda.OutOfMemoryError among them),
    cuDNN's unsupported-configuration error, and the CPU allocator's."""
    if not isinstance(error, RuntimeError) or len(error.args) != 1:
        return False
    message = str(error.args[0])
    return (
        ("CUDA" in message and "out of memory" in message)
        or "cuDNN error: CUDNN_STATUS_NOT_SUPPORTED." in message
        or "DefaultCPUAllocator: can't allocate memory" in message
    )


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """A trial's Trainer does not announce the device again."""
    logger = logging.getLogger("ltrain")
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)


def _free_memory() -> None:
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def attribute_holders(trainer: Any, model: Any, name: str) -> list[Any]:
    """Where `name` lives, in Lightning's order: the module, its hparams, the datamodule, its
    hparams (reads take the last, writes go to all)."""
    holders: list[Any] = []
    datamodule = trainer.datamodule
    for owner in (model, datamodule):
        if owner is None:
            continue
        if hasattr(owner, name):
            holders.append(owner)
        if name in owner.hparams:
            holders.append(owner.hparams)
    return holders


def _set_size(trainer: Any, model: Any, name: str, value: int) -> None:
    for holder in attribute_holders(trainer, model, name):
        if isinstance(holder, dict):
            holder[name] = value
        else:
            setattr(holder, name, value)


def _get_size(trainer: Any, model: Any, name: str) -> int:
    holder = attribute_holders(trainer, model, name)[-1]
    return holder[name] if isinstance(holder, dict) else getattr(holder, name)


class _Search:
    """One search: the trials and Lightning's rules for the next size."""

    def __init__(self, trainer: Any, model: Any, stage: str, name: str, max_val: int) -> None:
        self.trainer, self.model, self.stage, self.name = trainer, model, stage, name
        self.max_val = max_val

    def dataset_length(self) -> int | None:
        """The length of the stage's dataset (the largest of several training loaders), None when
        one is not sized; read afresh, as the loaders depend on the batch size."""
        from ltrain.trainer.loaders import as_loader_list, loader_source  # the trainer imports us

        kind = {"fit": "train", "validate": "val"}.get(self.stage, self.stage)
        trainer = self.trainer
        source = loader_source(kind, self.model, trainer.datamodule, None)
        lengths = []
        for loader in as_loader_list(source):
            dataset = getattr(loader, "dataset", None)
            if not isinstance(dataset, Sized):
                return None
            lengths.append(len(dataset))
        return sum(lengths) if kind != "train" else max(lengths)

    def adjust(
        self, factor: float = 1.0, value: int | None = None, limit: int = 8192, desc: str = ""
    ) -> tuple[int, bool]:
        """Set the next size (`value`, else the current one times `factor`, at most `limit`:
        Lightning caps only binsearch's doublings at max_val); (size, whether it changed). A
        size already as large as the dataset is kept. `desc` says how the last trial went."""
        size = _get_size(self.trainer, self.model, self.name)
        length = self.dataset_length()
        if length is not None and size >= length:
            info(
                f"The batch size {size} is greater or equal than the length of your dataset: {length}."
            )
            return size, False
        new = value if value is not None else int(size * factor)
        if new > limit:
            if desc:
                info(f"Batch size {new} exceeds max_val limit {limit}, capping at {limit}")
            new = limit
        if desc:
            info(f"Batch size {size} {desc}, trying batch size {new}")
        _set_size(self.trainer, self.model, self.name, new)
        return new, new != size

    def trial(self, steps: int) -> None:
        """Run `steps` steps of the stage at the current size on a private Trainer."""
        from ltrain.strategies import SingleDeviceStrategy
        from ltrain.trainer import Trainer

        user = self.trainer
        kind = {"fit": "val", "validate": "val"}.get(self.stage, self.stage)
        # as in Lightning 2.6, a predict trial runs the user's whole predict epoch, not `steps`
        limit = user.limit_predict_batches if self.stage == "predict" else steps
        options: dict[str, Any] = {f"limit_{kind}_batches": limit}
        if self.stage == "fit":
            options.update(
                max_steps=steps,
                max_epochs=user.max_epochs,
                val_check_interval=user.val_check_interval,
                check_val_every_n_epoch=user.check_val_every_n_epoch,
                accumulate_grad_batches=user.accumulate_grad_batches,
                gradient_clip_val=user.gradient_clip_val,
                gradient_clip_algorithm=user.gradient_clip_algorithm,
            )
        datamodule = user.datamodule
        with _quiet():
            private = Trainer(
                strategy=SingleDeviceStrategy(user.device),
                precision=user.precision,
                num_sanity_val_steps=0,
                logger=False,
                enable_checkpointing=False,
                enable_progress_bar=False,
                enable_model_summary=False,
                default_root_dir=user.default_root_dir,
                **options,
            )
        try:
            if self.stage == "fit":
                private.fit(self.model, datamodule=datamodule)
            elif self.stage == "predict":
                private.predict(self.model, datamodule=datamodule, return_predictions=False)
            else:
                getattr(private, self.stage)(self.model, datamodule=datamodule, verbose=False)
        finally:
            self.model.trainer = user
            if datamodule is not None:
                datamodule.trainer = user

    def power(self, size: int, steps: int, max_trials: int) -> int:
        succeeded = False
        for trial in range(max_trials):
            _free_memory()
            if size >= self.max_val:
                info(f"Reached the maximum batch size limit of {self.max_val}. Stopping search.")
                break
            try:
                self.trial(steps)
            except RuntimeError as error:
                if not is_oom_error(error):
                    raise
                _free_memory()
                size, _ = self.adjust(factor=0.5, desc="failed")
                if succeeded:
                    break
                continue
            if trial + 1 >= max_trials:
                break
            size, changed = self.adjust(factor=2.0, desc="succeeded")
            if not changed:
                break
            succeeded = True
        return size

    def binsearch(self, size: int, steps: int, max_trials: int, margin: float) -> int:
        low, high, ran = 1, 0, 0
        while True:
            _free_memory()
            if size >= self.max_val:
                info(f"Reached the maximum batch size limit of {self.max_val}. Stopping search.")
                break
            try:
                self.trial(steps)
            except RuntimeError as error:
                if not is_oom_error(error):
                    raise
                _free_memory()
                high = size
                size, _ = self.adjust(value=(high + low) // 2, desc="failed")
                if high - low <= 1:
                    break
                continue
            ran += 1
            if ran >= max_trials:
                break
            low = size
            if high and high - low <= 1:
                break
            if high:
                size, changed = self.adjust(
                    value=(high + low) // 2, limit=self.max_val, desc="succeeded"
                )
            else:
                size, changed = self.adjust(factor=2.0, limit=self.max_val, desc="succeeded")
            if not changed:
                break
        reduced = max(1, int(size * (1 - margin)))
        if margin > 0 and reduced != size:
            info(f"Applying margin of {margin:.1%}, reducing batch size from {size} to {reduced}")
            size = reduced
            _set_size(self.trainer, self.model, self.name, size)
        return size


def scale_batch_size(
    trainer: Any,
    model: Any,
    mode: str,
    steps_per_trial: int,
    init_val: int,
    max_trials: int,
    batch_arg_name: str,
    margin: float,
    max_val: int,
) -> int | None:
    """Search for the batch size of the stage `trainer` runs; None under fast_dev_run."""
    import torch

    from ltrain.seed import rng_state, set_rng_state

    if trainer.fast_dev_run:
        warnings.warn("Skipping batch size scaler since `fast_dev_run` is enabled.", stacklevel=2)
        return None
    stage = trainer.state.fn.value
    weights = copy.deepcopy(model.state_dict())
    generators = rng_state()
    search = _Search(trainer, model, stage, batch_arg_name, max_val)
    try:
        size, _ = search.adjust(value=init_val)
        if mode == "power":
            size = search.power(size, steps_per_trial, max_trials)
        else:
            size = search.binsearch(size, steps_per_trial, max_trials, margin)
        _free_memory()
        info(f"Finished batch size finder, will continue with full run using batch size {size}")
    finally:
        with torch.no_grad():
            model.load_state_dict(weights)
        set_rng_state(generators)
    return size


def check_margin(margin: float) -> None:
    if not 0.0 <= margin < 1.0:
        raise MisconfigurationException(
            f"batch size finder margin={margin}: expected 0 <= margin < 1"
        )


class BatchSizeFinder(Callback):
    """Lightning's BatchSizeFinder: scales the batch size at the start of fit, validate (not the
    sanity check), test and predict; the result is `optimal_batch_size`."""

    SUPPORTED_MODES = MODES

    def __init__(
        self,
        mode: str = "power",
        steps_per_trial: int = 3,
        init_val: int = 2,
        max_trials: int = 25,
        batch_arg_name: str = "batch_size",
        margin: float = 0.05,
        max_val: int = 8192,
    ) -> None:
        mode = mode.lower()
        if mode not in MODES:
            raise ValueError(f"BatchSizeFinder mode={mode!r}: expected one of {MODES}")
        check_margin(margin)
        self.optimal_batch_size: int | None = init_val
        self._mode, self._steps_per_trial, self._init_val = mode, steps_per_trial, init_val
        self._max_trials, self._batch_arg_name = max_trials, batch_arg_name
        self._margin, self._max_val = margin, max_val
        self._early_exit = False

    def setup(self, trainer: Any, pl_module: Any, stage: str) -> None:
        if trainer.strategy.distributed:
            raise MisconfigurationException(
                "The batch size finder runs in one process: find the batch size with devices=1, "
                "then train with several"
            )
        name = self._batch_arg_name
        holders = attribute_holders(trainer, pl_module, name)
        if not holders:
            raise MisconfigurationException(
                f"Field {name} not found in `model`, `datamodule`, nor their `hparams` attributes."
            )
        if hasattr(pl_module, name) and name in pl_module.hparams:
            warnings.warn(
                f"Field `model.{name}` and `model.hparams.{name}` are mutually exclusive! "
                f"`model.{name}` will be used as the initial batch size for scaling. If this is "
                "not the intended behavior, please remove either one.",
                stacklevel=2,
            )

    def scale_batch_size(self, trainer: Any, pl_module: Any) -> None:
        """Search now (fit's data is known from on_fit_start on); `optimal_batch_size` is set."""
        from ltrain.trainer.loaders import as_loader_list  # the trainer imports this module

        stage = trainer.state.fn.value
        sources = trainer._fit_sources
        if stage == "fit" and sources is not None and sources.train is not None:
            raise MisconfigurationException(
                "The batch size finder cannot be used with dataloaders passed directly to "
                "`.fit()`: build them in the module's or a datamodule's `*_dataloader()` hooks."
            )
        kind = {"fit": "train", "validate": "val"}.get(stage, stage)
        if stage != "fit" and len(as_loader_list(getattr(trainer, f"{kind}_dataloaders"))) > 1:
            raise MisconfigurationException(
                f"The batch size finder cannot be used with multiple {kind} dataloaders: give "
                f"{stage}() one."
            )
        self.optimal_batch_size = scale_batch_size(
            trainer,
            pl_module,
            self._mode,
            self._steps_per_trial,
            self._init_val,
            self._max_trials,
            self._batch_arg_name,
            self._margin,
            self._max_val,
        )
        if self._early_exit:
            raise TunerExit

    def on_fit_start(self, trainer: Any, pl_module: Any) -> None:
        self.scale_batch_size(trainer, pl_module)

    def on_validation_start(self, trainer: Any, pl_module: Any) -> None:
        if trainer.sanity_checking or trainer.state.fn.value != "validate":
            return
        self.scale_batch_size(trainer, pl_module)

    def on_test_start(self, trainer: Any, pl_module: Any) -> None:
        self.scale_batch_size(trainer, pl_module)

    def on_predict_start(self, trainer: Any, pl_module: Any) -> None:
        self.scale_batch_size(trainer, pl_module)
