"""Data modules and the tensor loader; built-in data sets stay uint8 until they reach the device.

Importing it imports torch; torchvision and scikit-learn load only when a data set is set up.
"""

from __future__ import annotations

from ltrain.data.cifar import CIFAR10
from ltrain.data.datamodule import DataModule, LightningDataModule
from ltrain.data.digits import Digits
from ltrain.data.loader import TensorLoader
from ltrain.data.mnist import MNIST

__all__ = ["CIFAR10", "MNIST", "DataModule", "Digits", "LightningDataModule", "TensorLoader"]
