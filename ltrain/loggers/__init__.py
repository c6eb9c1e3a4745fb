"""Loggers: where logged rows and hyperparameters are stored.

TensorBoard, W&B and MLflow need optional extras (`pip install 'ltrain[tensorboard]'`, `[wandb]`,
`[mlflow]`); their packages are imported on first use, never by `import ltrain`.
"""

from ltrain.errors import lightning_names_not_here
from ltrain.loggers.base import Logger
from ltrain.loggers.csv_logs import CSVLogger
from ltrain.loggers.mlflow import MLFlowLogger, MLflowLogger
from ltrain.loggers.tensorboard import TensorBoardLogger
from ltrain.loggers.wandb import WandbLogger

__all__ = [
    "CSVLogger",
    "Logger",
    "MLFlowLogger",
    "MLflowLogger",
    "TensorBoardLogger",
    "WandbLogger",
]

# Lightning 2.6's loggers that ltrain does not have (tests/test_package_shape.py checks the list)
NOT_YET = ("CometLogger", "LitLogger")
__getattr__ = lightning_names_not_here("ltrain.loggers", NOT_YET)
