"""Tuner.scale_batch_size, BatchSizeFinder and LearningRateFinder, with the sizes and results
real Lightning 2.6 gives for the same models (a fake out-of-memory error above a size, as in
Lightning's own tests)."""

from __future__ import annotations

import random

import pytest
import torch
from boring import BoringModel, quiet_trainer
from torch.utils.data import DataLoader, TensorDataset

import ltrain as pl
from ltrain.callbacks import BatchSizeFinder, LearningRateFinder
from ltrain.callbacks.batch_size_finder import is_oom_error
from ltrain.errors import MisconfigurationException
from ltrain.tuner import Tuner


def _dataset(samples: int) -> TensorDataset:
    x = torch.randn(samples, 4, generator=torch.Generator().manual_seed(0))
    return TensorDataset(x, x.sum(1, keepdim=True))


class Sized(pl.LightningModule):
    """Runs out of memory (a fake CUDA error) for batches larger than `limit`."""

    def __init__(self, limit: int = 10**9, samples: int = 1000) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(4, 1)
        self.batch_size = 2
        self.limit, self.samples, self.seen = limit, samples, []

    def train_dataloader(self):
        return DataLoader(_dataset(self.samples), batch_size=self.batch_size)

    def training_step(self, batch, batch_idx):
        self.seen.append(len(batch[0]))
        if len(batch[0]) > self.limit:
            raise RuntimeError("CUDA error: out of memory")
        return torch.nn.functional.mse_loss(self.layer(batch[0]), batch[1])

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)

    def tried(self) -> list[int]:
        return [s for i, s in enumerate(self.seen) if i == 0 or self.seen[i - 1] != s]


def _search(tmp_path, model, **options):
    trainer = quiet_trainer(tmp_path, logger=False, enable_checkpointing=False, max_epochs=1)
    return Tuner(trainer).scale_batch_size(model, **options), trainer


# (limit, samples, options) -> (result, sizes tried in order, training steps): Lightning 2.6's
LIGHTNING = [
    ((10**9, 1000, {"max_trials": 4}), (16, [2, 4, 8, 16], 12)),
    ((10**9, 1000, {"max_val": 16}), (16, [2, 4, 8], 9)),
    ((10**9, 1000, {"max_val": 10}), (16, [2, 4, 8], 9)),  # power caps at 8192, not max_val
    ((40, 1000, {}), (32, [2, 4, 8, 16, 32, 64], 16)),
    ((40, 1000, {"mode": "binsearch"}), (38, [2, 4, 8, 16, 32, 64, 48, 40, 44, 42, 41], 23)),
    ((40, 1000, {"mode": "binsearch", "margin": 0.0}), (40, [2, 4, 8, 16, 32, 64, 48, 40, 44, 42, 41], 23)),
    ((1, 1000, {}), (1, [2, 1, 2], 5)),
    ((100, 50, {}), (64, [2, 4, 8, 16, 32, 18, 50], 15)),  # stops at the dataset's length
    ((100, 50, {"mode": "binsearch"}), (60, [2, 4, 8, 16, 32, 18, 50], 15)),
    ((1000, 1000, {"mode": "binsearch", "max_trials": 3}), (7, [2, 4, 8], 9)),
]  # fmt: skip


@pytest.mark.parametrize(("setup", "expected"), LIGHTNING)
def test_scale_batch_size_tries_the_sizes_lightning_tries(tmp_path, setup, expected):
    limit, samples, options = setup
    model = Sized(limit, samples)
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    torch.manual_seed(3)
    random.seed(3)
    draws = (torch.rand(1), random.random())
    torch.manual_seed(3)
    random.seed(3)
    result, trainer = _search(tmp_path, model, **options)
    assert (result, model.tried(), len(model.seen)) == expected
    assert model.batch_size == result
    assert all(torch.equal(weights[k], v) for k, v in model.state_dict().items())
    assert (torch.rand(1), random.random()) == draws  # every generator put back
    assert trainer.state.status.value == "finished" and model.trainer is trainer
    assert not any(isinstance(c, BatchSizeFinder) for c in trainer.callbacks)


class Data(pl.LightningDataModule):
    def __init__(self, batch_size: int = 2) -> None:
        super().__init__()
        self.save_hyperparameters()

    def train_dataloader(self):
        return DataLoader(_dataset(200), batch_size=self.hparams.batch_size)


def test_the_size_lives_where_lightning_looks_for_it(tmp_path):
    data, model = Data(), Sized(limit=40)
    del model.batch_size
    result, _ = _search(tmp_path, model, datamodule=data)
    assert result == data.hparams.batch_size == 32

    class InHparams(Sized):
        def __init__(self, batch_size: int = 2) -> None:
            super().__init__(limit=40)
            del self.batch_size
            self.save_hyperparameters()

        def train_dataloader(self):
            return DataLoader(_dataset(1000), batch_size=self.hparams.batch_size)

    model = InHparams()
    assert _search(tmp_path, model, mode="binsearch")[0] == model.hparams.batch_size == 38


def test_refusals_name_the_problem(tmp_path):
    model = Sized()
    del model.batch_size
    with pytest.raises(MisconfigurationException, match="Field batch_size not found"):
        _search(tmp_path, model)
    loader = DataLoader(_dataset(8), batch_size=2)
    with pytest.raises(MisconfigurationException, match="dataloaders passed directly"):
        _search(tmp_path, Sized(), train_dataloaders=loader)
    with pytest.raises(MisconfigurationException, match="takes dataloaders, not"):
        _search(tmp_path, Sized(), method="validate", train_dataloaders=loader)
    with pytest.raises(ValueError, match="method='tune': expected one of"):
        _search(tmp_path, Sized(), method="tune")
    with pytest.raises(ValueError, match="mode='linear': expected one of"):
        BatchSizeFinder(mode="linear")
    with pytest.raises(MisconfigurationException, match="margin=1.5: expected 0 <= margin < 1"):
        BatchSizeFinder(margin=1.5)
    trainer = quiet_trainer(tmp_path, callbacks=[BatchSizeFinder()])
    with pytest.raises(ValueError, match="already configured with a `BatchSizeFinder`"):
        Tuner(trainer).scale_batch_size(Sized())


def test_an_error_other_than_out_of_memory_ends_the_search(tmp_path):
    class Broken(Sized):
        def training_step(self, batch, batch_idx):
            raise RuntimeError("shapes do not match")

    with pytest.raises(RuntimeError, match="shapes do not match"):
        _search(tmp_path, Broken())


def test_out_of_memory_is_recognised_as_lightning_recognises_it():
    assert is_oom_error(torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB"))
    assert is_oom_error(RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried"))
    assert is_oom_error(RuntimeError("cuDNN error: CUDNN_STATUS_NOT_SUPPORTED. This error"))
    assert not is_oom_error(RuntimeError("out of range"))
    assert not is_oom_error(ValueError("CUDA out of memory"))


def test_the_callback_searches_then_fits_with_the_size_found(tmp_path):
    model, finder = Sized(limit=40, samples=200), BatchSizeFinder(max_trials=10)
    trainer = quiet_trainer(tmp_path, logger=False, max_epochs=2, callbacks=[finder])
    trainer.fit(model)
    # Lightning 2.6: 16 search steps, then two epochs of 6 full batches and a last one of 8
    assert finder.optimal_batch_size == model.batch_size == 32
    assert model.seen[16:] == [32] * 6 + [8] + [32] * 6 + [8]
    assert trainer.global_step == 14


def test_learning_rate_finder_callback_sets_the_rate_and_fits_on(tmp_path):
    class Lr(Sized):
        def __init__(self) -> None:
            super().__init__(samples=200)
            self.batch_size, self.lr = 16, 0.001

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=self.lr)

    model = Lr()
    finder = LearningRateFinder(num_training_steps=30, min_lr=1e-4, max_lr=1.0)
    trainer = quiet_trainer(tmp_path, logger=False, max_epochs=2, callbacks=[finder])
    trainer.fit(model)
    suggestion = finder.optimal_lr.suggestion()
    assert suggestion is not None and model.lr == suggestion
    assert trainer.optimizers[0].param_groups[0]["lr"] == suggestion
    # as in Lightning, the sweep ends with the fit's own epochs (2 x 13 batches), not at 30
    assert len(finder.optimal_lr.results["lr"]) == 26 and trainer.global_step == 26
    with pytest.raises(ValueError, match="mode='cosine': expected one of"):
        LearningRateFinder(mode="cosine")
    with pytest.raises(ValueError, match="already configured with a `LearningRateFinder`"):
        Tuner(trainer).lr_find(BoringModel())


def test_evaluation_stages_search_too_and_refuse_several_loaders(tmp_path):
    class Eval(Sized):
        def val_dataloader(self):
            return DataLoader(_dataset(100), batch_size=self.batch_size)

        def validation_step(self, batch, batch_idx, dataloader_idx=0):
            self.seen.append(len(batch[0]))
            if len(batch[0]) > 20:
                raise RuntimeError("CUDA error: out of memory")

    model = Eval()
    trainer = quiet_trainer(tmp_path, logger=False)
    # Lightning 2.6: three batches per size, one at 32, then 16
    assert Tuner(trainer).scale_batch_size(model, method="validate", max_trials=10) == 16
    assert model.tried() == [2, 4, 8, 16, 32] and len(model.seen) == 13
    loaders = [DataLoader(_dataset(8), batch_size=2)] * 2
    with pytest.raises(MisconfigurationException, match="multiple val dataloaders"):
        Tuner(trainer).scale_batch_size(Eval(), method="validate", dataloaders=loaders)


def test_fast_dev_run_skips_the_search(tmp_path):
    model = Sized()
    trainer = quiet_trainer(tmp_path, fast_dev_run=True)
    with pytest.warns(UserWarning, match="Skipping batch size scaler since `fast_dev_run`"):
        assert Tuner(trainer).scale_batch_size(model) is None
    assert model.seen == [] and model.batch_size == 2


def test_a_predict_trial_runs_the_whole_epoch_as_lightnings_does(tmp_path):
    class Predict(Sized):
        def predict_dataloader(self):
            return DataLoader(_dataset(100), batch_size=self.batch_size)

        def predict_step(self, batch, batch_idx):
            self.seen.append(len(batch[0]))
            if len(batch[0]) > 20:
                raise RuntimeError("CUDA error: out of memory")
            return batch[0]

    model = Predict()
    trainer = quiet_trainer(tmp_path, logger=False)
    assert Tuner(trainer).scale_batch_size(model, method="predict", max_trials=10) == 16
    # Lightning 2.6: every batch of 100 samples at 2, 4, 8 and 16, then one at 32
    assert model.seen == [2] * 50 + [4] * 25 + [8] * 12 + [4] + [16] * 6 + [4] + [32]
