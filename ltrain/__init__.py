"""ltrain: PyTorch training with Lightning's API, from YAML configs and one command.

`import ltrain as pl` gives the names Lightning code uses (`pl.LightningModule`, `pl.Trainer`,
`pl.callbacks.EarlyStopping`, `pl.loggers.CSVLogger`, `pl.seed_everything`). They load on first
use, so `import ltrain` (and the command line's start-up) does not import torch.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "Module": "ltrain.module",
    "LightningModule": "ltrain.module",
    "Trainer": "ltrain.trainer",
    "DataModule": "ltrain.data.datamodule",
    "LightningDataModule": "ltrain.data.datamodule",
    "Callback": "ltrain.callbacks.base",
    "seed_everything": "ltrain.seed",
    "MisconfigurationException": "ltrain.errors",
}
_SUBPACKAGES = (
    "callbacks",
    "loggers",
    "data",
    "zoo",
    "tuner",
    "strategies",
    "accelerators",
    "profilers",
    "utilities",
)

__all__ = [*_EXPORTS, *_SUBPACKAGES, "__version__"]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    if name in _SUBPACKAGES:
        return importlib.import_module(f"ltrain.{name}")
    raise AttributeError(f"module 'ltrain' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
