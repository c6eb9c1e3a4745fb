"""`Digits`: scikit-learn's bundled 8x8 digits as a data module; no download, kept as uint8.

The 1797 images ship inside scikit-learn, so examples and tests train on real data without network.
They stay uint8 (0..16) in memory and in the loader, a quarter of float32's bytes to move, and
become floats in `on_after_batch_transfer`, after the batch reached the device.
"""

from __future__ import annotations

import torch

from ltrain.data.images import ImageDataModule, Split
from ltrain.errors import MisconfigurationException


def _check_fraction(name: str, value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
        raise MisconfigurationException(f"Digits: {name} must be a number in [0, 1), got {value!r}")


class Digits(ImageDataModule):
    """Seeded train/val/test split of the 8x8 digits; batches are `(images, labels)`."""

    num_classes = 10
    dims = (1, 8, 8)
    max_value = 16.0

    def __init__(
        self,
        batch_size: int = 64,
        val_fraction: float = 0.15,
        test_fraction: float = 0.15,
        seed: int = 0,
    ) -> None:
        super().__init__(batch_size, seed)
        _check_fraction("val_fraction", val_fraction)
        _check_fraction("test_fraction", test_fraction)
        if val_fraction + test_fraction >= 1:
            raise MisconfigurationException(
                "Digits: val_fraction + test_fraction must be < 1 to leave training data, "
                f"got {val_fraction} + {test_fraction}"
            )
        self.val_fraction = val_fraction
        self.test_fraction = test_fraction

    def setup(self, stage: str) -> None:
        if not self._splits:
            self._splits = self._load_splits()

    def _load_splits(self) -> dict[str, Split]:
        try:
            from sklearn.datasets import load_digits
        except ImportError as err:
            raise ImportError("Digits needs scikit-learn: pip install 'ltrain[examples]'") from err
        bunch = load_digits()
        images = torch.from_numpy(bunch.images).to(torch.uint8).unsqueeze(1)
        labels = torch.from_numpy(bunch.target).to(torch.int64)
        n = len(labels)
        # Floors keep at least one training sample whenever the fractions sum below 1; test comes
        # first in the permutation so changing val_fraction leaves the test set as it was.
        n_test = int(n * self.test_fraction)
        n_val = int(n * self.val_fraction)
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(self.seed))
        bounds = {
            "test": (0, n_test),
            "val": (n_test, n_test + n_val),
            "train": (n_test + n_val, n),
        }
        splits = {}
        for name, (lo, hi) in bounds.items():
            # Sorted so val and test keep the data set's order; only the training loader shuffles.
            idx = perm[lo:hi].sort().values
            splits[name] = (images[idx], labels[idx])
        return splits
