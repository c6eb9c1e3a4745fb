"""`ImageClassifier`: a `Module` around any backbone, with cross-entropy, accuracy and an optimizer.

It logs `train_loss`/`train_acc` per step and epoch (on the progress bar), `valid_loss`/`valid_acc`
and `test_loss`/`test_acc` per epoch: the names the shipped configs monitor. Training accuracy is
computed with two tensor ops and averaged over the epoch by `self.log` (batch-size weighted, so
the same number as torchmetrics' micro accuracy): torchmetrics' per-step `forward` costs about
0.5 ms on a CPU, more than the seed MLP's whole step. Validation and test use torchmetrics.
`MLPClassifier` and `CNNClassifier` fix the backbone, so a config only sets numbers.
"""

from __future__ import annotations

from typing import Any

import torch
import torchmetrics
from torch import nn
from torch.nn import functional as F

from ltrain.errors import MisconfigurationException
from ltrain.module import Module
from ltrain.zoo.networks import SmallCNN, TwoBranchMLP

OPTIMIZERS = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "sgd": torch.optim.SGD}


class ImageClassifier(Module):
    """Classifies with `backbone`; batches are `(images, labels)`; predictions are class indices."""

    def __init__(
        self,
        backbone: nn.Module,
        num_classes: int = 10,
        lr: float = 1e-3,
        optimizer: str = "adam",
        weight_decay: float = 0.0,
        momentum: float = 0.9,
    ) -> None:
        super().__init__()
        if optimizer not in OPTIMIZERS:
            raise MisconfigurationException(
                f"optimizer={optimizer!r}: expected one of {', '.join(OPTIMIZERS)}"
            )
        if lr <= 0:
            raise MisconfigurationException(f"lr={lr!r}: expected a positive number")
        self.model = backbone
        self.num_classes = num_classes
        self.lr = lr
        self.optimizer_name = optimizer
        self.weight_decay = weight_decay
        self.momentum = momentum
        self.valid_acc = torchmetrics.Accuracy(task="multiclass", num_classes=num_classes)
        self.test_acc = torchmetrics.Accuracy(task="multiclass", num_classes=num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        logits = self(x)
        loss = F.cross_entropy(logits, y)
        accuracy = (logits.argmax(dim=1) == y).float().mean()
        self.log_dict(
            {"train_loss": loss, "train_acc": accuracy},
            prog_bar=True,
            on_step=True,
            on_epoch=True,
        )
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        logits = self(x)
        self.valid_acc(logits, y)
        # sync_dist: under DDP the epoch value is the mean over every rank's batches (one
        # reduction per epoch); the torchmetrics accuracy synchronises itself
        self.log("valid_loss", F.cross_entropy(logits, y), prog_bar=True, sync_dist=True)
        self.log("valid_acc", self.valid_acc, prog_bar=True)

    def test_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        logits = self(x)
        self.test_acc(logits, y)
        self.log("test_loss", F.cross_entropy(logits, y), sync_dist=True)
        self.log("test_acc", self.test_acc)

    def predict_step(self, batch: Any, batch_idx: int = 0, dataloader_idx: int = 0) -> torch.Tensor:
        x = batch[0] if isinstance(batch, (list, tuple)) else batch
        return self(x).argmax(dim=1)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        options: dict[str, Any] = {"lr": self.lr, "weight_decay": self.weight_decay}
        if self.optimizer_name == "sgd":
            options["momentum"] = self.momentum
        return OPTIMIZERS[self.optimizer_name](self.parameters(), **options)


class MLPClassifier(ImageClassifier):
    """The seed's two-branch MLP as a classifier (`in_features`: 784 for MNIST, 64 for Digits)."""

    def __init__(
        self,
        in_features: int = 784,
        num_classes: int = 10,
        lr: float = 1e-3,
        optimizer: str = "adam",
        weight_decay: float = 0.0,
    ) -> None:
        super().__init__(
            TwoBranchMLP(in_features, num_classes), num_classes, lr, optimizer, weight_decay
        )
        self.save_hyperparameters()


class CNNClassifier(ImageClassifier):
    """`SmallCNN` as a classifier."""

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 10,
        width: int = 32,
        lr: float = 1e-3,
        optimizer: str = "adam",
        weight_decay: float = 0.0,
    ) -> None:
        super().__init__(
            SmallCNN(in_channels, num_classes, width), num_classes, lr, optimizer, weight_decay
        )
        self.save_hyperparameters()
