"""Callbacks: hooks into the loop, with Lightning's names."""

from ltrain.callbacks.base import Callback
from ltrain.callbacks.checkpoint import Checkpoint, OnExceptionCheckpoint
from ltrain.callbacks.early_stopping import EarlyStopping
from ltrain.callbacks.finetuning import BackboneFinetuning, BaseFinetuning
from ltrain.callbacks.gradient_accumulation_scheduler import GradientAccumulationScheduler
from ltrain.callbacks.lambda_function import LambdaCallback
from ltrain.callbacks.lr_monitor import LearningRateMonitor
from ltrain.callbacks.model_checkpoint import ModelCheckpoint
from ltrain.callbacks.model_summary import ModelSummary
from ltrain.callbacks.progress import ProgressBar, TQDMProgressBar
from ltrain.callbacks.timer import Timer
from ltrain.errors import lightning_names_not_here

__all__ = [
    "BackboneFinetuning",
    "BaseFinetuning",
    "Callback",
    "Checkpoint",
    "EarlyStopping",
    "GradientAccumulationScheduler",
    "LambdaCallback",
    "LearningRateMonitor",
    "ModelCheckpoint",
    "ModelSummary",
    "OnExceptionCheckpoint",
    "ProgressBar",
    "TQDMProgressBar",
    "Timer",
]

# Lightning 2.6's callbacks that ltrain does not have yet (tests/test_package_shape.py keeps the
# list equal to what Lightning exports and ltrain lacks)
NOT_YET = (
    "BasePredictionWriter",
    "BatchSizeFinder",
    "DeviceStatsMonitor",
    "EMAWeightAveraging",
    "LearningRateFinder",
    "ModelPruning",
    "RichModelSummary",
    "RichProgressBar",
    "SpikeDetection",
    "StochasticWeightAveraging",
    "ThroughputMonitor",
    "WeightAveraging",
)
__getattr__ = lightning_names_not_here("ltrain.callbacks", NOT_YET)
