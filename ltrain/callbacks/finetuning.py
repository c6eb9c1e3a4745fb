"""`BaseFinetuning` and `BackboneFinetuning`: freeze part of a model, then train it later.

A subclass freezes modules before the optimizers exist (`freeze_before_training`, called from
`setup`) and, at the start of each training epoch, may unfreeze them and hand their parameters
to an optimizer as a new parameter group (`finetune_function`). The groups it added are recorded
by parameter name, so a resumed fit rebuilds them before the optimizer's state is put back.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

import torch
from torch.nn import Module, ModuleDict
from torch.nn.modules.batchnorm import _BatchNorm

from ltrain.callbacks.base import Callback
from ltrain.errors import MisconfigurationException

if TYPE_CHECKING:
    from ltrain.module import Module as LightningModule
    from ltrain.trainer.trainer import Trainer

log = logging.getLogger(__name__)

Modules = Module | Iterable[Any]  # a module, or (nested) iterables of them


def multiplicative(epoch: int) -> float:
    """BackboneFinetuning's default schedule: the backbone's rate doubles each epoch."""
    return 2.0


class BaseFinetuning(Callback):
    """Override `freeze_before_training` and `finetune_function(pl_module, epoch, optimizer)`."""

    def __init__(self) -> None:
        # per optimizer index: its parameter groups with parameter names instead of tensors
        self._internal_optimizer_metadata: dict[int, list[dict[str, Any]]] = {}
        self._restarting = False

    def state_dict(self) -> dict[str, Any]:
        return {"internal_optimizer_metadata": self._internal_optimizer_metadata}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._restarting = True
        self._internal_optimizer_metadata = state_dict["internal_optimizer_metadata"]

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        self.freeze_before_training(pl_module)

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """On resume, give each optimizer back the groups this callback had added to it."""
        if not self._restarting:
            return
        by_name = dict(pl_module.named_parameters())
        for index, optimizer in enumerate(trainer.optimizers):
            recorded = self._internal_optimizer_metadata.get(index)
            if recorded:
                optimizer.param_groups = _with_params(recorded, by_name)
        self._restarting = False

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        for index, optimizer in enumerate(trainer.optimizers):
            groups_before = len(optimizer.param_groups)
            self.finetune_function(pl_module, trainer.current_epoch, optimizer)
            self._record(pl_module, index, groups_before, optimizer.param_groups)

    def finetune_function(
        self, pl_module: LightningModule, epoch: int, optimizer: torch.optim.Optimizer
    ) -> None:
        """Unfreeze what should train from `epoch` on (called at every training epoch start)."""
        raise NotImplementedError

    def freeze_before_training(self, pl_module: LightningModule) -> None:
        """Freeze what should not train at first (called before the optimizers are made)."""
        raise NotImplementedError

    def _record(
        self, pl_module: Module, index: int, groups_before: int, groups: list[dict[str, Any]]
    ) -> None:
        names = {param: name for name, param in pl_module.named_parameters()}
        if index not in self._internal_optimizer_metadata:
            self._internal_optimizer_metadata[index] = _with_params(groups, names)
        elif len(groups) != groups_before:
            self._internal_optimizer_metadata[index] += _with_params(groups[groups_before:], names)

    @staticmethod
    def flatten_modules(modules: Modules) -> list[Module]:
        """The leaf modules (and those holding parameters of their own) under `modules`."""
        if isinstance(modules, ModuleDict):
            modules = modules.values()
        if isinstance(modules, Module):
            found: Iterable[Module] = modules.modules()
        else:
            found = [leaf for item in modules for leaf in BaseFinetuning.flatten_modules(item)]
        return [m for m in found if m._parameters or not any(True for _ in m.children())]

    @staticmethod
    def filter_params(
        modules: Modules, train_bn: bool = True, requires_grad: bool = True
    ) -> Iterator[torch.nn.Parameter]:
        """The parameters under `modules` whose `requires_grad` is `requires_grad`."""
        for module in BaseFinetuning.flatten_modules(modules):
            if isinstance(module, _BatchNorm) and not train_bn:
                continue
            for param in module.parameters(recurse=False):
                if param.requires_grad == requires_grad:
                    yield param

    @staticmethod
    def make_trainable(modules: Modules) -> None:
        for module in BaseFinetuning.flatten_modules(modules):
            if isinstance(module, _BatchNorm):
                module.track_running_stats = True
            for param in module.parameters(recurse=False):
                param.requires_grad = True

    @staticmethod
    def freeze_module(module: Module) -> None:
        """No gradients for the module's own parameters; a batch norm also stops its statistics."""
        if isinstance(module, _BatchNorm):
            module.track_running_stats = False
        for param in module.parameters(recurse=False):
            param.requires_grad = False

    @staticmethod
    def freeze(modules: Modules, train_bn: bool = True) -> None:
        """Freeze every leaf under `modules`; batch norms stay trainable when `train_bn`."""
        for module in BaseFinetuning.flatten_modules(modules):
            if train_bn and isinstance(module, _BatchNorm):
                BaseFinetuning.make_trainable(module)
            else:
                BaseFinetuning.freeze_module(module)

    @staticmethod
    def filter_on_optimizer(
        optimizer: torch.optim.Optimizer, params: Iterable[torch.Tensor]
    ) -> list[torch.Tensor]:
        """`params` less those some group of `optimizer` already holds (a warning names them)."""
        held = [p for group in optimizer.param_groups for p in group["params"]]
        kept: list[torch.Tensor] = []
        skipped: list[torch.Tensor] = []
        for param in params:
            (skipped if any(torch.equal(p, param) for p in held) else kept).append(param)
        if skipped:
            warnings.warn(
                "The provided params to be frozen already exist within another group of this "
                "optimizer. Those parameters will be skipped.\nHINT: Did you init your optimizer "
                "in `configure_optimizer` as such:\n "
                f"{type(optimizer)}(filter(lambda p: p.requires_grad, self.parameters()), ...) ",
                UserWarning,
                stacklevel=2,
            )
        return kept

    @staticmethod
    def unfreeze_and_add_param_group(
        modules: Modules,
        optimizer: torch.optim.Optimizer,
        lr: float | None = None,
        initial_denom_lr: float = 10.0,
        train_bn: bool = True,
    ) -> None:
        """Make `modules` trainable and give their parameters to `optimizer` as a new group,
        at `lr`, or at the first group's rate divided by `initial_denom_lr`."""
        BaseFinetuning.make_trainable(modules)
        group_lr = optimizer.param_groups[0]["lr"] / initial_denom_lr if lr is None else float(lr)
        params = BaseFinetuning.filter_params(modules, train_bn=train_bn, requires_grad=True)
        params_to_add = BaseFinetuning.filter_on_optimizer(optimizer, params)
        if params_to_add:
            optimizer.add_param_group({"params": params_to_add, "lr": group_lr})


class BackboneFinetuning(BaseFinetuning):
    """Train `pl_module.backbone` from `unfreeze_backbone_at_epoch` on, its learning rate
    starting at a fraction of the model's and growing by `lambda_func(epoch + 1)` each epoch,
    up to the model's rate when `should_align`."""

    def __init__(
        self,
        unfreeze_backbone_at_epoch: int = 10,
        lambda_func: Callable[[int], float] = multiplicative,
        backbone_initial_ratio_lr: float = 0.1,
        backbone_initial_lr: float | None = None,
        should_align: bool = True,
        initial_denom_lr: float = 10.0,
        train_bn: bool = True,
        verbose: bool = False,
        rounding: int = 12,
    ) -> None:
        super().__init__()
        self.unfreeze_backbone_at_epoch = unfreeze_backbone_at_epoch
        self.lambda_func = lambda_func
        self.backbone_initial_ratio_lr = backbone_initial_ratio_lr
        self.backbone_initial_lr = backbone_initial_lr
        self.should_align = should_align
        self.initial_denom_lr = initial_denom_lr
        self.train_bn = train_bn
        self.verbose = verbose
        self.rounding = rounding
        self.previous_backbone_lr: float | None = None

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "previous_backbone_lr": self.previous_backbone_lr}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.previous_backbone_lr = state_dict["previous_backbone_lr"]
        super().load_state_dict(state_dict)

    def freeze_before_training(self, pl_module: LightningModule) -> None:
        if not isinstance(getattr(pl_module, "backbone", None), Module):
            raise MisconfigurationException(
                "The LightningModule should have a nn.Module `backbone` attribute"
            )
        self.freeze(pl_module.backbone)

    def finetune_function(
        self, pl_module: LightningModule, epoch: int, optimizer: torch.optim.Optimizer
    ) -> None:
        model_lr = optimizer.param_groups[0]["lr"]
        if epoch == self.unfreeze_backbone_at_epoch:
            backbone_lr = (
                self.backbone_initial_lr
                if self.backbone_initial_lr is not None
                else model_lr * self.backbone_initial_ratio_lr
            )
            self.unfreeze_and_add_param_group(
                pl_module.backbone,
                optimizer,
                backbone_lr,
                train_bn=self.train_bn,
                initial_denom_lr=self.initial_denom_lr,
            )
        elif epoch > self.unfreeze_backbone_at_epoch and self.previous_backbone_lr is not None:
            backbone_lr = self.lambda_func(epoch + 1) * self.previous_backbone_lr
            if self.should_align and backbone_lr > model_lr:
                backbone_lr = model_lr
            optimizer.param_groups[-1]["lr"] = backbone_lr
        else:
            return
        self.previous_backbone_lr = backbone_lr
        if self.verbose:
            log.info(
                f"Current lr: {round(model_lr, self.rounding)}, "
                f"Backbone lr: {round(backbone_lr, self.rounding)}"
            )


def _with_params(groups: list[dict[str, Any]], mapping: dict[Any, Any]) -> list[dict[str, Any]]:
    """Parameter groups with each parameter replaced through `mapping` (tensor <-> name)."""
    return [
        {
            **{k: v for k, v in group.items() if k != "params"},
            "params": [mapping[p] for p in group["params"]],
        }
        for group in groups
    ]
