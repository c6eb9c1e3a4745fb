"""LightningCLI's Python names for ltrain (`from ltrain.cli import ...`, as from lightning.pytorch.cli).

`ReduceLROnPlateau` is torch's with the metric it watches: a config's `lr_scheduler:
ReduceLROnPlateau` names it, as LightningCLI's does, so `configure_optimizers` can return it with
its `monitor`.
"""

from __future__ import annotations

from typing import Any

import torch


class ReduceLROnPlateau(torch.optim.lr_scheduler.ReduceLROnPlateau):
    """torch's ReduceLROnPlateau with the metric it watches, which `configure_optimizers` returns."""

    def __init__(self, optimizer: torch.optim.Optimizer, monitor: str, *args: Any, **kwargs: Any):
        super().__init__(optimizer, *args, **kwargs)
        self.monitor = monitor
