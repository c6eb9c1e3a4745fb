"""The trainer package: `Trainer` and the loops it runs, one concern per file (see trainer.py).

Importing `ltrain.trainer` gives the public names; the files hold plain functions that take the
trainer, so the path from `fit()` to `loss.backward()` stays a few calls deep.
"""

from __future__ import annotations

from ltrain.trainer.optimizers import LightningOptimizer, LRSchedulerConfig
from ltrain.trainer.trainer import Trainer

__all__ = ["LRSchedulerConfig", "LightningOptimizer", "Trainer"]
