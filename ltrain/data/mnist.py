"""`MNIST`: torchvision's MNIST read once as whole uint8 tensors; batches are slices, not samples.

torchvision's reader parses the IDX files; this module takes its `.data` and `.targets` whole and
never goes through its per-sample `__getitem__`, PIL conversion or collate. Images stay uint8 until
`on_after_batch_transfer`, so a quarter of float32's bytes cross to the device. Missing files are
reported by this module, naming the folder and files, because there may be no network to download.
"""

from __future__ import annotations

import os

import torch

from ltrain.data.images import ImageDataModule, Split
from ltrain.errors import MissingDataError

RAW_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


class MNIST(ImageDataModule):
    """Seeded train/val split of MNIST's 60k training images plus its 10k test images."""

    num_classes = 10
    dims = (1, 28, 28)
    mean, std = (0.1307,), (0.3081,)

    def __init__(
        self,
        root: str = "data",
        download: bool = False,
        batch_size: int = 128,
        val_split: int | float = 5000,
        seed: int = 0,
        normalize: bool = False,
    ) -> None:
        super().__init__(batch_size, seed, normalize, val_split)
        self.root = root
        self.download = download

    @property
    def raw_folder(self) -> str:
        """Where torchvision looks for the IDX files."""
        return os.path.join(self.root, "MNIST", "raw")

    def prepare_data(self) -> None:
        if self.download:
            from torchvision.datasets import MNIST as TorchvisionMNIST

            # One instance fetches all four files, the test set's included.
            TorchvisionMNIST(self.root, train=True, download=True)

    def read(self, train: bool) -> Split:
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
