"""Loggers: where logged rows and hyperparameters are stored."""

from ltrain.loggers.base import Logger
from ltrain.loggers.csv_logs import CSVLogger

__all__ = ["CSVLogger", "Logger"]
