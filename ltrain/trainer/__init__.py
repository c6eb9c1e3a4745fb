"""The trainer package: `Trainer` and the loops it runs, one concern per file (see trainer.py).

Importing `ltrain.trainer` gives the public names, loaded on first use: a callback that needs
one of the loop's helpers (`ltrain.trainer.log_rows`) imports that file alone, not the Trainer and
everything it imports, so no import order makes a cycle. The files hold plain functions that
take the trainer, so the path from `fit()` to `loss.backward()` stays a few calls deep.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ltrain.trainer.optimizers import LightningOptimizer, LRSchedulerConfig
    from ltrain.trainer.trainer import Trainer

_EXPORTS = {
    "LRSchedulerConfig": "ltrain.trainer.optimizers",
    "LightningOptimizer": "ltrain.trainer.optimizers",
    "Trainer": "ltrain.trainer.trainer",
}

__all__ = ["LRSchedulerConfig", "LightningOptimizer", "Trainer"]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'ltrain.trainer' has no attribute {name!r}")
