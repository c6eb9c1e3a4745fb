"""The shipped models: shapes, the seed network's layout, and a classifier that learns digits."""

from __future__ import annotations

import torch

import ltrain as pl
from ltrain.data import Digits
from ltrain.zoo import CNNClassifier, ImageClassifier, MLPClassifier, SmallCNN, TwoBranchMLP


def test_two_branch_mlp_has_the_seed_layout():
    net = TwoBranchMLP(in_features=784, num_classes=10)
    shapes = {name: tuple(p.shape) for name, p in net.named_parameters()}
    assert shapes == {
        "dense1.weight": (32, 784),
        "dense1.bias": (32,),
        "dense2.weight": (32, 784),
        "dense2.bias": (32,),
        "dense3.weight": (16, 32),
        "dense3.bias": (16,),
        "out.weight": (10, 48),
        "out.bias": (10,),
    }
    assert net(torch.zeros(5, 1, 28, 28)).shape == (5, 10)


def test_small_cnn_accepts_digits_and_mnist_sizes():
    net = SmallCNN(in_channels=1, num_classes=10, width=8)
    assert net(torch.zeros(2, 1, 8, 8)).shape == (2, 10)
    assert net(torch.zeros(2, 1, 28, 28)).shape == (2, 10)


def test_classifier_state_dict_keys_carry_attribute_names():
    model = MLPClassifier(in_features=64)
    assert "model.dense1.weight" in model.state_dict()
    assert model.hparams == {
        "in_features": 64,
        "num_classes": 10,
        "lr": 1e-3,
        "optimizer": "adam",
        "weight_decay": 0.0,
    }


def test_image_classifier_wraps_any_backbone_and_rejects_unknown_optimizer():
    model = ImageClassifier(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10)))
    assert model(torch.zeros(3, 1, 8, 8)).shape == (3, 10)
    try:
        ImageClassifier(torch.nn.Identity(), optimizer="lbfgs")
    except pl.MisconfigurationException as error:
        assert "lbfgs" in str(error) and "adam" in str(error)
    else:
        raise AssertionError("an unknown optimizer must be refused")


def test_mlp_classifier_learns_digits_and_predicts_classes(tmp_path):
    pl.seed_everything(0)
    model = MLPClassifier(in_features=64, lr=3e-3)
    data = Digits(batch_size=64)
    trainer = pl.Trainer(
        max_epochs=6,
        accelerator="cpu",
        default_root_dir=tmp_path,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(model, datamodule=data)
    assert float(trainer.callback_metrics["valid_acc"]) > 0.85
    (test_metrics,) = trainer.test(model, datamodule=data, verbose=False)
    assert set(test_metrics) == {"test_loss", "test_acc"}
    predictions = trainer.predict(model, datamodule=data)
    assert all(p.dtype == torch.int64 and p.dim() == 1 for p in predictions)
    assert sum(len(p) for p in predictions) == 269


def test_cnn_classifier_trains_one_epoch(tmp_path):
    model = CNNClassifier(width=4)
    trainer = pl.Trainer(
        max_epochs=1,
        limit_train_batches=3,
        limit_val_batches=2,
        accelerator="cpu",
        default_root_dir=tmp_path,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(model, datamodule=Digits(batch_size=32))
    assert trainer.global_step == 3
    assert "valid_loss" in trainer.callback_metrics
