"""Models the shipped configs use: plain networks and ready-made classifier modules."""

from ltrain.zoo.classifier import CNNClassifier, ImageClassifier, MLPClassifier
from ltrain.zoo.networks import SmallCNN, TwoBranchMLP

__all__ = ["CNNClassifier", "ImageClassifier", "MLPClassifier", "SmallCNN", "TwoBranchMLP"]
