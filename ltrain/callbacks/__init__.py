"""Callbacks: hooks into the loop, with Lightning's names."""

from ltrain.callbacks.base import Callback
from ltrain.callbacks.batch_size_finder import BatchSizeFinder
from ltrain.callbacks.checkpoint import Checkpoint, OnExceptionCheckpoint
from ltrain.callbacks.device_stats_monitor import DeviceStatsMonitor
from ltrain.callbacks.early_stopping import EarlyStopping
from ltrain.callbacks.finetuning import BackboneFinetuning, BaseFinetuning
from ltrain.callbacks.gradient_accumulation_scheduler import GradientAccumulationScheduler
from ltrain.callbacks.lambda_function import LambdaCallback
from ltrain.callbacks.lr_finder import LearningRateFinder
from ltrain.callbacks.lr_monitor import LearningRateMonitor
from ltrain.callbacks.model_checkpoint import ModelCheckpoint
from ltrain.callbacks.model_summary import ModelSummary
from ltrain.callbacks.prediction_writer import BasePredictionWriter
from ltrain.callbacks.progress import ProgressBar, TQDMProgressBar
from ltrain.callbacks.rich_display import RichModelSummary, RichProgressBar
from ltrain.callbacks.stochastic_weight_avg import StochasticWeightAveraging
from ltrain.callbacks.throughput_monitor import ThroughputMonitor
from ltrain.callbacks.timer import Timer
from ltrain.callbacks.weight_averaging import EMAWeightAveraging, WeightAveraging
from ltrain.errors import lightning_names_not_here

__all__ = [
    "BackboneFinetuning",
    "BaseFinetuning",
    "BasePredictionWriter",
    "BatchSizeFinder",
    "Callback",
    "Checkpoint",
    "DeviceStatsMonitor",
    "EMAWeightAveraging",
    "EarlyStopping",
    "GradientAccumulationScheduler",
    "LambdaCallback",
    "LearningRateFinder",
    "LearningRateMonitor",
    "ModelCheckpoint",
    "ModelSummary",
    "OnExceptionCheckpoint",
    "ProgressBar",
    "RichModelSummary",
    "RichProgressBar",
    "StochasticWeightAveraging",
    "TQDMProgressBar",
    "ThroughputMonitor",
    "Timer",
    "WeightAveraging",
]

# Lightning 2.6's callbacks that ltrain does not have yet (tests/test_package_shape.py keeps the
# list equal to what Lightning exports and ltrain lacks)
NOT_YET = (
    "ModelPruning",
    "SpikeDetection",
)
__getattr__ = lightning_names_not_here("ltrain.callbacks", NOT_YET)
