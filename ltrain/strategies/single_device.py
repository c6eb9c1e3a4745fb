"""`SingleDeviceStrategy`: one process on one device."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from ltrain.module import Module


class SingleDeviceStrategy:
    """One process on one device: reductions are identities and every rank is rank zero."""

    world_size = 1
    global_rank = 0
    local_rank = 0
    node_rank = 0
    is_global_zero = True
    distributed = False

    def __init__(self, device: torch.device | str = "cpu") -> None:
        self.root_device = torch.device(device)

    def setup(self) -> None:
        """Nothing to start with one process."""

    def reduce(self, tensor: torch.Tensor, op: str = "mean") -> torch.Tensor:
        return tensor

    def reduce_boolean_decision(self, decision: bool, all: bool = True) -> bool:
        return decision

    def broadcast(self, obj: Any, src: int = 0) -> Any:
        return obj

    def gather_objects(self, obj: Any) -> list[Any]:
        return [obj]

    def all_gather(
        self, tensor: torch.Tensor, group: Any = None, sync_grads: bool = False
    ) -> torch.Tensor:
        """One process: `tensor` itself, with no leading dimension added (as Lightning)."""
        return tensor

    def barrier(self, name: str | None = None) -> None:
        """Nothing to wait for with one process."""

    def shard_loader(self, loader: Any, kind: str) -> Any:
        return loader

    def before_manual_backward(self, runner: Any, loss: torch.Tensor) -> None:
        """Nothing to prepare: gradients stay in this process."""

    def wrap(self, module: Module) -> None:
        """No wrapper: the trainer calls the module's training_step itself."""
