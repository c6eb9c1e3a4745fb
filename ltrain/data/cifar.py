"""`CIFAR10`: CIFAR-10's binary release read into whole uint8 tensors; batches are slices.

The binary release (`cifar-10-batches-bin`) is fixed-size records: one label byte and 3,072 pixel
bytes (32x32 red, then green, then blue). Reading it is one `frombuffer` per file and, unlike the
Python release, involves no pickle, so a data file cannot run code. `download: true` fetches and
unpacks it with torchvision's download helper where there is internet.
"""

from __future__ import annotations

import os

import torch

from ltrain.data.images import ImageDataModule, Split
from ltrain.errors import MisconfigurationException, MissingDataError

URL = "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"
FOLDER = "cifar-10-batches-bin"
TRAIN_FILES = tuple(f"data_batch_{i}.bin" for i in range(1, 6))
TEST_FILES = ("test_batch.bin",)
RECORD = 1 + 3 * 32 * 32


def read_batches(paths: list[str]) -> Split:
    """Images (N, 3, 32, 32) uint8 and labels (N,) int64 from CIFAR-10 binary files."""
    chunks = []
    for path in paths:
        with open(path, "rb") as handle:
            raw = handle.read()
        if len(raw) % RECORD:
            raise MisconfigurationException(
                f"CIFAR10: {path} is not a CIFAR-10 binary batch ({len(raw)} bytes is not a "
                f"multiple of the {RECORD}-byte record)"
            )
        chunks.append(torch.frombuffer(bytearray(raw), dtype=torch.uint8).view(-1, RECORD))
    records = torch.cat(chunks)
    return records[:, 1:].reshape(-1, 3, 32, 32).clone(), records[:, 0].to(torch.int64)


class CIFAR10(ImageDataModule):
    """Seeded train/val split of the 50k training images plus the 10k test images."""

    num_classes = 10
    dims = (3, 32, 32)
    mean, std = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)

    def __init__(
        self,
        root: str = "data",
        download: bool = False,
        batch_size: int = 128,
        val_split: int | float = 5000,
        seed: int = 0,
        normalize: bool = True,
    ) -> None:
        super().__init__(batch_size, seed, normalize, val_split)
        self.root = root
        self.download = download

    @property
    def folder(self) -> str:
        return os.path.join(self.root, FOLDER)

    def prepare_data(self) -> None:
        if self.download and not os.path.isdir(self.folder):
            from torchvision.datasets.utils import download_and_extract_archive

            download_and_extract_archive(URL, self.root)

    def read(self, train: bool) -> Split:
        expected = TRAIN_FILES + TEST_FILES
        missing = [n for n in expected if not os.path.isfile(os.path.join(self.folder, n))]
        if missing:
            raise MissingDataError(
                f"CIFAR10: {self.folder} must hold {', '.join(expected)} (missing: "
                f"{', '.join(missing)}); unpack cifar-10-binary.tar.gz into {self.root}, "
                "or set download: true where there is internet"
            )
        names = TRAIN_FILES if train else TEST_FILES
        return read_batches([os.path.join(self.folder, n) for n in names])
