"""`Module` (alias `LightningModule`): the user's model, its steps and hooks, `log`, hyperparameters.

The module holds no loop logic. Everything that needs the run (logging, optimizers, backward)
goes through `self.trainer`, which owns the state; the module only forwards, and only to the
public members `TrainerContract` lists, so neither file imports the other. Hook names and
signatures are Lightning's so that user code moves over with its import changed.
`save_hyperparameters` and `hparams` come from `ltrain.hyperparameters`, shared with `DataModule`.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, runtime_checkable

import torch
from torch import nn

from ltrain.batch import apply_to_tensors, move_to_device, to_tensors
from ltrain.errors import MisconfigurationException
from ltrain.hyperparameters import HyperparametersMixin

if TYPE_CHECKING:
    from ltrain.results import Results


@runtime_checkable
class TrainerContract(Protocol):
    """Everything a `Module` reaches for on its trainer; `ltrain.Trainer` provides it publicly.

    The module reads no other trainer member, and neither file imports the other: the trainer
    is handed in at run time (`module.trainer = trainer`).
    """

    current_epoch: int
    global_step: int
    results: Results  # `self.log` feeds it; the loop that runs sets it and the hook logging
    optimizers: list[torch.optim.Optimizer]  # `self.optimizers(use_pl_optimizer=False)`
    lightning_optimizers: list[Any]  # `self.optimizers()`: each `step()` goes through the trainer
    lr_scheduler_configs: list[Any]  # `self.lr_schedulers()`: records with a `scheduler`
    strategy: Any  # `self.all_gather` gathers through its `all_gather`

    @property
    def global_rank(self) -> int: ...
    @property
    def local_rank(self) -> int: ...
    @property
    def logger(self) -> Any: ...
    @property
    def loggers(self) -> list[Any]: ...

    def backward(self, loss: torch.Tensor, *args: Any, **kwargs: Any) -> None:
        """`manual_backward`: backward with its hooks, through the precision."""

    def step_optimizer(
        self, optimizer: torch.optim.Optimizer, closure: Any = None, **kwargs: Any
    ) -> Any:
        """What `step()` of an optimizer from `self.optimizers()` runs: the step through the
        precision, with its hooks, counted in `global_step`."""


class Module(HyperparametersMixin, nn.Module):
    """Base class for models trained by `ltrain.Trainer`; override the hooks you need."""

    _jit_is_scripting = False  # set while exporting: `trainer` then reads None, as jit probes it
    __jit_unused_properties__: ClassVar[list[str]]  # set below the class: all its properties

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._trainer: TrainerContract | None = None
        self.automatic_optimization: bool = True
        self.prepare_data_per_node: bool = True  # as DataModule's: where prepare_data runs
        self._toggled_requires_grad: dict[nn.Parameter, bool] = {}
        self._warned: set[str] = set()  # arguments already warned about, once a module
        self._example_input_array: Any = None
        self._strict_loading: bool | None = None

    # ------------------------------------------------------------------ settings users assign
    @property
    def example_input_array(self) -> Any:
        """A sample input for `forward` (a tensor, a tuple of arguments, or a dict of keyword
        arguments): the model summary's in/out sizes, and the default for the exports."""
        return self._example_input_array

    @example_input_array.setter
    def example_input_array(self, example: Any) -> None:
        self._example_input_array = example

    @property
    def strict_loading(self) -> bool:
        """Whether checkpoints load with `load_state_dict(..., strict=True)` (the default)."""
        return self._strict_loading in (None, True)

    @strict_loading.setter
    def strict_loading(self, strict_loading: bool) -> None:
        self._strict_loading = strict_loading

    # ------------------------------------------------------------------ run state (read-only views)
    @property
    def trainer(self) -> TrainerContract:
        """The `Trainer` running this module (typed here by what the module itself uses of it)."""
        if self._trainer is None and not Module._jit_is_scripting:
            raise RuntimeError(f"{type(self).__name__} is not attached to a `Trainer`.")
        return self._trainer  # type: ignore[return-value]  # None only while exporting

    @trainer.setter
    def trainer(self, trainer: TrainerContract | None) -> None:
        self._trainer = trainer

    @property
    def device(self) -> torch.device:
        for parameter in self.parameters():
            return parameter.device
        for buffer in self.buffers():
            return buffer.device
        return torch.device("cpu")

    @property
    def dtype(self) -> torch.dtype:
        for tensor in self.parameters():
            return tensor.dtype
        return torch.get_default_dtype()

    @property
    def current_epoch(self) -> int:
        return self._trainer.current_epoch if self._trainer is not None else 0

    @property
    def global_step(self) -> int:
        return self._trainer.global_step if self._trainer is not None else 0

    @property
    def global_rank(self) -> int:
        return self._trainer.global_rank if self._trainer is not None else 0

    @property
    def local_rank(self) -> int:
        return self._trainer.local_rank if self._trainer is not None else 0

    @property
    def logger(self) -> Any:
        return self._trainer.logger if self._trainer is not None else None

    @property
    def loggers(self) -> list[Any]:
        return self._trainer.loggers if self._trainer is not None else []

    def print(self, *args: Any, **kwargs: Any) -> None:
        """`print` on global rank zero only, without tearing an open progress bar."""
        if self.global_rank != 0:
            return
        from tqdm import tqdm

        sep = kwargs.pop("sep", " ")
        tqdm.write(sep.join(str(a) for a in args), **kwargs)

    # ------------------------------------------------------------------ logging
    def log(
        self,
        name: str,
        value: Any,
        prog_bar: bool = False,
        logger: bool | None = None,
        on_step: bool | None = None,
        on_epoch: bool | None = None,
        reduce_fx: str | Any = "mean",
        enable_graph: bool = False,
        sync_dist: bool = False,
        sync_dist_group: Any = None,
        add_dataloader_idx: bool = True,
        batch_size: int | None = None,
        metric_attribute: str | None = None,
        rank_zero_only: bool = False,
    ) -> None:
        """Record a value for the progress bar, the loggers and `trainer.callback_metrics`.

        Inside `training_step` it is logged per step by default; inside `validation_step` and
        `test_step` per epoch, as the batch-size-weighted mean over the epoch.

        As in Lightning 2.6: `enable_graph=True` still leaves the recorded values without a graph
        (Lightning updates its aggregates under no_grad); `rank_zero_only=True` (the call is made
        on rank 0 only) skips the `sync_dist` reduction; `metric_attribute` names the attribute
        holding a logged torchmetrics object, which checkpoints then find it by. A
        `sync_dist_group` is not supported: `sync_dist` reduces over all processes, with a warning.
        """
        if self._trainer is None:
            raise MisconfigurationException(
                f"self.log({name!r}) needs the module to be attached to a Trainer (call it inside a hook)."
            )
        if sync_dist_group is not None and sync_dist:
            self._warn_once(
                "sync_dist_group",
                f"self.log({name!r}, sync_dist_group=...): ltrain has no process subgroups; "
                "sync_dist reduces the value over all processes.",
            )
        if metric_attribute is not None:
            self._check_metric_attribute(name, value, metric_attribute)
        self._trainer.results.log(  # positional: this runs for every value of every step
            name,
            value,
            prog_bar,
            True if logger is None else logger,
            on_step,
            on_epoch,
            reduce_fx,
            sync_dist,
            add_dataloader_idx,
            batch_size,
            rank_zero_only,
            metric_attribute,
        )

    def _check_metric_attribute(self, name: str, value: Any, attribute: str) -> None:
        if isinstance(value, (torch.Tensor, int, float)):
            return  # as in Lightning, only a torchmetrics object is looked up by it
        try:
            held = self.get_submodule(attribute)
        except AttributeError:
            held = None
        if held is not value:
            raise MisconfigurationException(
                f"self.log({name!r}, ..., metric_attribute={attribute!r}): "
                f"{type(self).__name__}.{attribute} is not the logged metric; name the attribute "
                "that holds it."
            )

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            warnings.warn(message, UserWarning, stacklevel=3)

    def log_dict(
        self,
        dictionary: Mapping[str, Any],
        prog_bar: bool = False,
        logger: bool | None = None,
        on_step: bool | None = None,
        on_epoch: bool | None = None,
        reduce_fx: str | Any = "mean",
        enable_graph: bool = False,
        sync_dist: bool = False,
        sync_dist_group: Any = None,
        add_dataloader_idx: bool = True,
        batch_size: int | None = None,
        rank_zero_only: bool = False,
    ) -> None:
        """`log` every item of `dictionary` with the same options."""
        for name, value in dictionary.items():
            self.log(
                name,
                value,
                prog_bar=prog_bar,
                logger=logger,
                on_step=on_step,
                on_epoch=on_epoch,
                reduce_fx=reduce_fx,
                enable_graph=enable_graph,
                sync_dist=sync_dist,
                sync_dist_group=sync_dist_group,
                add_dataloader_idx=add_dataloader_idx,
                batch_size=batch_size,
                rank_zero_only=rank_zero_only,
            )

    @classmethod
    def load_from_checkpoint(
        cls,
        checkpoint_path: str,
        map_location: Any = None,
        strict: bool | None = None,
        **overrides: Any,
    ) -> Module:
        """Build the module from the hyperparameters a checkpoint carries, then load its weights
        (strictly unless `strict=False` or the module sets `strict_loading = False`)."""
        from ltrain.checkpoint import load_checkpoint

        checkpoint = load_checkpoint(checkpoint_path, map_location=map_location)
        init_args = {**checkpoint.get("hyper_parameters", {}), **overrides}
        module = cls(**init_args)
        if (
            module._strict_loading is not None
            and strict is not None
            and strict != module.strict_loading
        ):
            raise ValueError(
                f"load_from_checkpoint(..., strict={strict!r}) conflicts with "
                f"{cls.__name__}.strict_loading={module.strict_loading!r}; set the same value for both."
            )
        strict = module.strict_loading if strict is None else strict
        module.on_load_checkpoint(checkpoint)
        keys = module.load_state_dict(checkpoint["state_dict"], strict=strict)
        for what, names in (
            ("in the model state dict but not in the checkpoint", keys.missing_keys),
            ("not in the model state dict but in the checkpoint", keys.unexpected_keys),
        ):
            if names:
                warnings.warn(f"Found keys that are {what}: {names}", UserWarning, stacklevel=2)
        return module

    def freeze(self) -> Module:
        """Turn off `requires_grad` for every parameter and switch to eval mode (for inference)."""
        for parameter in self.parameters():
            parameter.requires_grad = False
        return self.eval()

    def unfreeze(self) -> Module:
        """Turn `requires_grad` back on for every parameter and switch to train mode."""
        for parameter in self.parameters():
            parameter.requires_grad = True
        return self.train()

    def to_torchscript(
        self,
        file_path: str | Path | None = None,
        method: str | None = "script",
        example_inputs: Any = None,
        **kwargs: Any,
    ) -> Any:
        """This module as a `torch.jit.ScriptModule`, scripted or traced (on `example_inputs`,
        else `example_input_array`), saved with `torch.jit.save` when `file_path` is given."""
        from ltrain.exporting import to_torchscript

        with _jit_scripting():
            return to_torchscript(self, file_path, method, example_inputs, **kwargs)

    def to_onnx(self, file_path: Any = None, input_sample: Any = None, **kwargs: Any) -> Any:
        """`torch.onnx.export` on `input_sample` (else `example_input_array`); needs `onnx`."""
        from ltrain.exporting import to_onnx

        return to_onnx(self, file_path, input_sample, **kwargs)

    def all_gather(self, data: Any, group: Any = None, sync_grads: bool = False) -> Any:
        """Every process's tensors (numbers become tensors; collections keep their structure),
        stacked along a new first dimension of size world size; unchanged in a single process."""
        gather = self.trainer.strategy.all_gather
        return apply_to_tensors(
            to_tensors(data, self.device),
            lambda tensor: gather(tensor, group=group, sync_grads=sync_grads),
        )

    # ------------------------------------------------------------------ optimization
    def optimizers(self, use_pl_optimizer: bool = True) -> Any:
        """The optimizer(s) from `configure_optimizers`: one object when there is one, else a list."""
        optimizers = (
            self.trainer.lightning_optimizers if use_pl_optimizer else self.trainer.optimizers
        )
        return optimizers[0] if len(optimizers) == 1 else optimizers

    def lr_schedulers(self) -> Any:
        """The scheduler(s) from `configure_optimizers`: None, one object, or a list."""
        schedulers = [config.scheduler for config in self.trainer.lr_scheduler_configs]
        if not schedulers:
            return None
        return schedulers[0] if len(schedulers) == 1 else schedulers

    def manual_backward(self, loss: torch.Tensor, *args: Any, **kwargs: Any) -> None:
        """`loss.backward()` through the trainer's precision (scaled under 16-mixed) and hooks."""
        if self.automatic_optimization:
            raise MisconfigurationException(
                "manual_backward needs `self.automatic_optimization = False`."
            )
        self.trainer.backward(loss, *args, **kwargs)

    def backward(self, loss: torch.Tensor, *args: Any, **kwargs: Any) -> None:
        """Called by the precision to run backward; override for custom backward calls."""
        loss.backward(*args, **kwargs)

    def toggle_optimizer(self, optimizer: Any) -> None:
        """Freeze every parameter not handled by `optimizer` (GAN-style alternating updates)."""
        own = {id(p) for group in optimizer.param_groups for p in group["params"]}
        self._toggled_requires_grad = {}
        for opt in self.trainer.optimizers:
            for group in opt.param_groups:
                for param in group["params"]:
                    if id(param) not in own and param not in self._toggled_requires_grad:
                        self._toggled_requires_grad[param] = param.requires_grad
                        param.requires_grad = False

    def untoggle_optimizer(self, optimizer: Any) -> None:
        """Undo `toggle_optimizer`."""
        for param, requires_grad in self._toggled_requires_grad.items():
            param.requires_grad = requires_grad
        self._toggled_requires_grad = {}

    @contextmanager
    def toggled_optimizer(self, optimizer: Any) -> Iterator[None]:
        self.toggle_optimizer(optimizer)
        try:
            yield
        finally:
            self.untoggle_optimizer(optimizer)

    def clip_gradients(
        self,
        optimizer: Any,
        gradient_clip_val: float | None = None,
        gradient_clip_algorithm: str | None = None,
    ) -> None:
        """Clip the gradients of `optimizer`'s parameters by norm (default) or by value."""
        if not gradient_clip_val:
            return
        params = [p for group in optimizer.param_groups for p in group["params"]]
        if gradient_clip_algorithm in (None, "norm"):
            torch.nn.utils.clip_grad_norm_(params, gradient_clip_val)
        elif gradient_clip_algorithm == "value":
            torch.nn.utils.clip_grad_value_(params, gradient_clip_val)
        else:
            raise MisconfigurationException(
                f"gradient_clip_algorithm={gradient_clip_algorithm!r}: expected 'norm' or 'value'"
            )

    def configure_gradient_clipping(
        self,
        optimizer: Any,
        gradient_clip_val: float | None = None,
        gradient_clip_algorithm: str | None = None,
    ) -> None:
        self.clip_gradients(optimizer, gradient_clip_val, gradient_clip_algorithm)

    def optimizer_step(
        self, epoch: int, batch_idx: int, optimizer: Any, optimizer_closure: Any = None
    ) -> None:
        """Step `optimizer`; the closure runs training_step and backward. Override for warm-up."""
        optimizer.step(closure=optimizer_closure)

    def optimizer_zero_grad(self, epoch: int, batch_idx: int, optimizer: Any) -> None:
        optimizer.zero_grad()

    def lr_scheduler_step(self, scheduler: Any, metric: Any) -> None:
        if metric is None:
            scheduler.step()
        else:
            scheduler.step(metric)

    # ------------------------------------------------------------------ user steps
    def configure_optimizers(self) -> Any:
        raise MisconfigurationException(
            f"{type(self).__name__} must implement `configure_optimizers` to be trained."
        )

    def training_step(self, *args: Any, **kwargs: Any) -> Any:
        raise MisconfigurationException(
            f"{type(self).__name__} must implement `training_step` to be trained."
        )

    def predict_step(self, batch: Any, batch_idx: int = 0, dataloader_idx: int = 0) -> Any:
        """By default, the forward pass of the batch (its first element for (x, y) batches)."""
        if isinstance(batch, (list, tuple)) and batch:
            batch = batch[0]
        return self(batch)

    def configure_callbacks(self) -> list[Any]:
        return []

    def configure_model(self) -> None:
        """Create layers lazily, right before the optimizers are configured."""

    # ------------------------------------------------------------------ hooks (no-ops by default)
    def prepare_data(self) -> None: ...
    def setup(self, stage: str) -> None: ...
    def teardown(self, stage: str) -> None: ...
    def on_fit_start(self) -> None: ...
    def on_fit_end(self) -> None: ...
    def on_train_start(self) -> None: ...
    def on_train_end(self) -> None: ...
    def on_validation_start(self) -> None: ...
    def on_validation_end(self) -> None: ...
    def on_test_start(self) -> None: ...
    def on_test_end(self) -> None: ...
    def on_predict_start(self) -> None: ...
    def on_predict_end(self) -> None: ...
    def on_train_epoch_start(self) -> None: ...
    def on_train_epoch_end(self) -> None: ...
    def on_validation_epoch_start(self) -> None: ...
    def on_validation_epoch_end(self) -> None: ...
    def on_test_epoch_start(self) -> None: ...
    def on_test_epoch_end(self) -> None: ...
    def on_predict_epoch_start(self) -> None: ...
    def on_predict_epoch_end(self) -> None: ...
    def on_train_batch_start(self, batch: Any, batch_idx: int) -> Any: ...
    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None: ...
    def on_validation_batch_start(
        self, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None: ...
    def on_validation_batch_end(
        self, outputs: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None: ...
    def on_test_batch_start(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None: ...
    def on_test_batch_end(
        self, outputs: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None: ...
    def on_predict_batch_start(
        self, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None: ...
    def on_predict_batch_end(
        self, outputs: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None: ...
    def on_validation_model_zero_grad(self) -> None:
        """Free the gradients before validation, so evaluation has their memory."""
        self.zero_grad(set_to_none=True)

    def on_validation_model_eval(self) -> None:
        """Put the module in eval mode for validation; override to keep parts training."""
        self.eval()

    def on_validation_model_train(self) -> None:
        """Called after validation only when overridden; by default each submodule's mode from
        before validation is put back (a part kept in eval mode stays there)."""
        self.train()

    def on_test_model_eval(self) -> None:
        """Put the module in eval mode for testing."""
        self.eval()

    def on_test_model_train(self) -> None:
        """Called after testing only when overridden (as `on_validation_model_train`)."""
        self.train()

    def on_predict_model_eval(self) -> None:
        """Put the module in eval mode for prediction (the modes are put back after it)."""
        self.eval()

    def on_before_zero_grad(self, optimizer: Any) -> None: ...
    def on_before_backward(self, loss: torch.Tensor) -> None: ...
    def on_after_backward(self) -> None: ...
    def on_before_optimizer_step(self, optimizer: Any) -> None: ...
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None: ...
    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None: ...

    def on_before_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        return batch

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        return batch

    def transfer_batch_to_device(
        self, batch: Any, device: torch.device, dataloader_idx: int
    ) -> Any:
        return move_to_device(batch, device)


@contextmanager
def _jit_scripting() -> Iterator[None]:
    Module._jit_is_scripting = True
    try:
        yield
    finally:
        Module._jit_is_scripting = False


# `torch.jit.script` leaves these out of the scripted module instead of evaluating them
Module.__jit_unused_properties__ = sorted(
    name for name in dir(Module) if isinstance(getattr(Module, name), property)
)

LightningModule = Module

# Hooks whose default does nothing: when neither the module nor a callback overrides one, the
# trainer does not call it at all (several run every batch).
NO_OP_HOOKS = frozenset(
    {
        "prepare_data", "setup", "teardown", "on_fit_start", "on_fit_end", "on_train_start",
        "on_train_end", "on_validation_start", "on_validation_end", "on_test_start",
        "on_test_end", "on_predict_start", "on_predict_end", "on_train_epoch_start",
        "on_train_epoch_end", "on_validation_epoch_start", "on_validation_epoch_end",
        "on_test_epoch_start", "on_test_epoch_end", "on_predict_epoch_start",
        "on_predict_epoch_end", "on_train_batch_start", "on_train_batch_end",
        "on_validation_batch_start", "on_validation_batch_end", "on_test_batch_start",
        "on_test_batch_end", "on_predict_batch_start", "on_predict_batch_end",
        "on_before_zero_grad", "on_before_backward", "on_after_backward",
        "on_before_optimizer_step", "on_save_checkpoint", "on_load_checkpoint",
    }
)  # fmt: skip
