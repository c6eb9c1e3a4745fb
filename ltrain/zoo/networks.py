"""Plain `nn.Module` networks the shipped configs train: the seed's two-branch MLP and a small CNN."""

from __future__ import annotations

import torch
from torch import nn


class TwoBranchMLP(nn.Module):
    """The seed notebook's network: flatten; in->32 and in->32->16 branches; concat 48->classes."""

    def __init__(self, in_features: int = 784, num_classes: int = 10) -> None:
        super().__init__()
        self.flatten = nn.Flatten()
        self.dense1 = nn.Linear(in_features, 32)
        self.dense2 = nn.Linear(in_features, 32)
        self.dense3 = nn.Linear(32, 16)
        self.out = nn.Linear(48, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.flatten(x)
        wide = torch.relu(self.dense1(x))
        deep = torch.relu(self.dense3(torch.relu(self.dense2(x))))
        return self.out(torch.cat([wide, deep], dim=1))


class SmallCNN(nn.Module):
    """Two conv blocks and a linear head; adaptive pooling makes it work for 8x8 and 28x28 inputs."""

    def __init__(self, in_channels: int = 1, num_classes: int = 10, width: int = 32) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(2),
        )
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(8 * width, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))
