"""`MNIST`: torchvision's MNIST read once as whole uint8 tensors; batches are slices, not samples.

torchvision's reader parses the IDX files; this module takes its `.data` and `.targets` whole and
never goes through its per-sample `__getitem__`, PIL conversion or collate. Images stay uint8 until
`on_after_batch_transfer`, so a quarter of float32's bytes cross to the device. Missing files are
reported by this module, naming the folder and files, because there may be no network to download.
"""

from __future__ import annotations

import os
from typing import Any

import torch

from ltrain.data.datamodule import DataModule
from ltrain.data.loader import TensorLoader
from ltrain.data.split import check_val_split, seeded_split
from ltrain.errors import MisconfigurationException, MissingDataError

Split = tuple[torch.Tensor, torch.Tensor]

RAW_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
MEAN, STD = 0.1307, 0.3081


class MNIST(DataModule):
    """Seeded train/val split of MNIST's 60k training images plus its 10k test images."""

    num_classes = 10
    dims = (1, 28, 28)

    def __init__(
        self,
        root: str = "data",
        download: bool = False,
        batch_size: int = 128,
        val_split: int | float = 5000,
        seed: int = 0,
        normalize: bool = False,
    ) -> None:
        super().__init__()
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise MisconfigurationException(
                f"MNIST: batch_size must be an int >= 1, got {batch_size!r}"
            )
        check_val_split("MNIST", val_split)
        self.root = root
        self.download = download
        self.batch_size = batch_size
        self.val_split = val_split
        self.seed = seed
        self.normalize = normalize
        self._splits: dict[str, Split] = {}

    @property
    def raw_folder(self) -> str:
        """Where torchvision looks for the IDX files."""
        return os.path.join(self.root, "MNIST", "raw")

    def prepare_data(self) -> None:
        if self.download:
            from torchvision.datasets import MNIST as TorchvisionMNIST

            # One instance fetches all four files, the test set's included.
            TorchvisionMNIST(self.root, train=True, download=True)

    def setup(self, stage: str) -> None:
        if stage in ("fit", "validate") and "train" not in self._splits:
            self._splits.update(self._train_val())
        if stage in ("test", "predict") and "test" not in self._splits:
            self._splits["test"] = self._read(train=False)

    def _read(self, train: bool) -> Split:
        missing = [f for f in RAW_FILES if not os.path.isfile(os.path.join(self.raw_folder, f))]
        if missing:
            raise MissingDataError(
                f"MNIST: {self.raw_folder} must hold {', '.join(RAW_FILES)} "
                f"(missing: {', '.join(missing)}); copy them there, "
                "or set download: true where there is internet"
            )
        from torchvision.datasets import MNIST as TorchvisionMNIST

        dataset = TorchvisionMNIST(self.root, train=train, download=False)
        return dataset.data.unsqueeze(1), dataset.targets.to(torch.int64)

    def _train_val(self) -> dict[str, Split]:
        return seeded_split(*self._read(train=True), self.val_split, self.seed, "MNIST")

    def _split(self, name: str) -> Split:
        if name not in self._splits:
            raise RuntimeError(f"MNIST: call setup() for a stage that uses the {name} set first")
        return self._splits[name]

    def train_dataloader(self) -> TensorLoader:
        return TensorLoader(
            *self._split("train"), batch_size=self.batch_size, shuffle=True, seed=self.seed
        )

    def val_dataloader(self) -> TensorLoader:
        return TensorLoader(*self._split("val"), batch_size=self.batch_size)

    def test_dataloader(self) -> TensorLoader:
        return TensorLoader(*self._split("test"), batch_size=self.batch_size)

    def predict_dataloader(self) -> TensorLoader:
        return TensorLoader(*self._split("test"), batch_size=self.batch_size)

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        images, labels = batch
        images = images.float().div_(255)
        if self.normalize:
            images = images.sub_(MEAN).div_(STD)
        return images, labels
