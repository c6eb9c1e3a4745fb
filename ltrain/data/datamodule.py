"""`DataModule`: Lightning's data hooks in one class, so a user's LightningDataModule moves over unchanged.

The trainer calls `prepare_data` once, then `setup(stage)`, asks for the loaders of the stage it runs,
and calls `teardown(stage)` at the end. `on_before_batch_transfer` / `on_after_batch_transfer` let a
data module convert batches where it is cheapest: the built-in ones keep images as uint8 and turn
them into floats after the batch reached the device. `save_hyperparameters()` works as in a
module: `hparams` go into hparams.yaml (merged with the module's) and into checkpoints under
`datamodule_hyper_parameters`; `state_dict()`, when not empty, is stored under the class's name.
"""

from __future__ import annotations

from typing import Any

from ltrain.batch import move_to_device
from ltrain.hyperparameters import HyperparametersMixin


class DataModule(HyperparametersMixin):
    """Base class for data modules; override the hooks you need."""

    # where checkpoints keep a data module's hyperparameters (Lightning's keys)
    CHECKPOINT_HYPER_PARAMS_KEY = "datamodule_hyper_parameters"

    def __init__(self) -> None:
        super().__init__()
        self.trainer: Any = None
        # with several processes: prepare_data on local rank 0 of each machine (False: rank 0 only)
        self.prepare_data_per_node = True

    def prepare_data(self) -> None:
        """Download or write files; called once per machine (not per process), before `setup`."""

    def setup(self, stage: str) -> None:
        """Build the data sets for `stage` ("fit", "validate", "test" or "predict")."""

    def teardown(self, stage: str) -> None:
        """Release what `setup` built."""

    def train_dataloader(self) -> Any:
        raise NotImplementedError(f"{type(self).__name__} defines no train_dataloader")

    def val_dataloader(self) -> Any:
        raise NotImplementedError(f"{type(self).__name__} defines no val_dataloader")

    def test_dataloader(self) -> Any:
        raise NotImplementedError(f"{type(self).__name__} defines no test_dataloader")

    def predict_dataloader(self) -> Any:
        raise NotImplementedError(f"{type(self).__name__} defines no predict_dataloader")

    def on_before_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        return batch

    def transfer_batch_to_device(self, batch: Any, device: Any, dataloader_idx: int) -> Any:
        """Move the batch's tensors to `device`; a data module that overrides it moves its own
        batches (it wins over the module's, as the other batch hooks do)."""
        return move_to_device(batch, device)

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        return batch

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore what `state_dict` returned."""

    def on_exception(self, exception: BaseException) -> None:
        """Called when a run raises (after the callbacks' `on_exception`)."""


LightningDataModule = DataModule
