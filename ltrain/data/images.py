"""`ImageDataModule`: image data sets held as whole uint8 tensors, split once, batched by slicing.

The built-in data sets (Digits, MNIST, CIFAR10) only differ in how they read their files. Here is
what they share: argument checks, a seeded train/validation split, the loaders (whole-tensor
`TensorLoader`s; only training shuffles), and the uint8 -> float conversion, done in
`on_after_batch_transfer` so it runs on the device, on a quarter of float32's bytes in transit.
"""

from __future__ import annotations

from typing import Any

import torch

from ltrain.data.datamodule import DataModule
from ltrain.data.loader import TensorLoader
from ltrain.errors import MisconfigurationException

Split = tuple[torch.Tensor, torch.Tensor]


def _check_val_split(owner: str, val_split: int | float) -> None:
    """`val_split` is a count >= 0 or a fraction in [0, 1)."""
    if isinstance(val_split, bool) or not isinstance(val_split, (int, float)):
        raise MisconfigurationException(
            f"{owner}: val_split must be a count or a fraction, got {val_split!r}"
        )
    if isinstance(val_split, float) and not 0 <= val_split < 1:
        raise MisconfigurationException(
            f"{owner}: val_split as a fraction must be in [0, 1), got {val_split}"
        )
    if isinstance(val_split, int) and val_split < 0:
        raise MisconfigurationException(
            f"{owner}: val_split as a count must be >= 0, got {val_split}"
        )


def _seeded_split(
    images: torch.Tensor, labels: torch.Tensor, val_split: int | float, seed: int, owner: str
) -> dict[str, Split]:
    """{'train': ..., 'val': ...}: the same split for the same seed, each in the file's order."""
    n = len(labels)
    n_val = int(n * val_split) if isinstance(val_split, float) else val_split
    if n_val >= n:
        raise MisconfigurationException(
            f"{owner}: val_split={val_split} leaves no training images out of {n}"
        )
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    # Sorted so both sets keep the file's order; only the training loader shuffles.
    val_idx, train_idx = perm[:n_val].sort().values, perm[n_val:].sort().values
    return {
        "train": (images[train_idx], labels[train_idx]),
        "val": (images[val_idx], labels[val_idx]),
    }


DEVICE_SHARE = 0.25  # the most of a GPU's free memory one data set may take


def _fits_on_device(device: torch.device, images: torch.Tensor) -> bool:
    """Whether `images` (uint8, a quarter of their float size) fit in a CUDA device's free
    memory with room to spare for the model, its activations and the float batches."""
    if device.type != "cuda":
        return False
    free, _ = torch.cuda.mem_get_info(device)
    return images.numel() * images.element_size() <= DEVICE_SHARE * free


class ImageDataModule(DataModule):
    """Serves `self._splits` as `(images, labels)` batches.

    A subclass implements `read(train)` (the training or the test set, whole); `setup` reads each
    once and splits `val_split` off the training set. A subclass with another split (Digits)
    fills `self._splits` in its own `setup`. Subclasses set `max_value` (the largest pixel value)
    and, for `normalize=True`, per-channel `mean` / `std` of the [0, 1]-scaled images.
    """

    max_value = 255.0
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()

    def __init__(
        self, batch_size: int, seed: int, normalize: bool = False, val_split: int | float = 0
    ) -> None:
        super().__init__()
        _check_val_split(type(self).__name__, val_split)
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise MisconfigurationException(
                f"{type(self).__name__}: batch_size must be an int >= 1, got {batch_size!r}"
            )
        self.batch_size = batch_size
        self.seed = seed
        self.normalize = normalize
        self.val_split = val_split
        self._splits: dict[str, Split] = {}
        self._stats: tuple[torch.Tensor, torch.Tensor] | None = None

    def read(self, train: bool) -> Split:
        """The whole training (or test) set: uint8 images (N, C, H, W) and int64 labels."""
        raise NotImplementedError(f"{type(self).__name__} must implement read(train)")

    def setup(self, stage: str) -> None:
        owner = type(self).__name__
        if stage in ("fit", "validate") and "train" not in self._splits:
            images, labels = self.read(train=True)
            self._splits.update(_seeded_split(images, labels, self.val_split, self.seed, owner))
        if stage in ("test", "predict") and "test" not in self._splits:
            self._splits["test"] = self.read(train=False)

    def _split(self, name: str) -> Split:
        """A set's tensors; on a GPU they move there once if they fit (see `_fits_on_device`),
        so batches are slices of device memory and never cross the bus again."""
        if name not in self._splits:
            raise RuntimeError(
                f"{type(self).__name__}: call setup() for a stage that uses the {name} set first"
            )
        device = getattr(self.trainer, "device", None)
        images, labels = self._splits[name]
        if device is not None and images.device != device and _fits_on_device(device, images):
            self._splits[name] = (images.to(device), labels.to(device))
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
        images = images.float().div_(self.max_value)
        if self.normalize and self.mean:
            mean, std = self._channel_stats(images.device)
            images = images.sub_(mean).div_(std)
        return images, labels

    def _channel_stats(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """`mean` and `std` as (1, C, 1, 1) tensors on `device`, made once per device: a tensor
        built from a list per batch would be a host-to-device copy that waits for the GPU."""
        if self._stats is None or self._stats[0].device != device:
            shape = (1, len(self.mean), 1, 1)
            self._stats = (
                torch.tensor(self.mean, device=device).view(shape),
                torch.tensor(self.std, device=device).view(shape),
            )
        return self._stats
