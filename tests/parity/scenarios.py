"""The parity scenarios: user code written once against `pl`, run under Lightning and under ltrain.

Each scenario is a function `(pl, root) -> observations`; the driver seeds with
`pl.seed_everything(0)` first and runs it with `root` (an empty folder) as the working directory.
Scenarios use only Lightning's public API, as a user's script does.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch.nn import functional as F

from parity.observe import (
    MODULE_HOOKS,
    classification,
    kit,
    loader,
    observe,
    recording_class,
    regression,
    trainer,
)

SCENARIOS: dict[str, Callable[[Any, Path], dict[str, Any]]] = {}


def scenario(function: Callable[[Any, Path], dict[str, Any]]) -> Callable:
    SCENARIOS[function.__name__] = function
    return function


def _fit(pl: Any, root: Path, model: Any = None, train: Any = None, val: Any = None, **kwargs: Any):
    model = model or kit(pl).Regressor()
    run = trainer(pl, root, **kwargs)
    run.fit(model, train or loader(regression()), val)
    return run, model


# ---------------------------------------------------------------------- the loop and the seed
@scenario
def fit_train_and_val(pl, root):
    run, model = _fit(pl, root, val=loader(regression(32, seed=2)), max_epochs=2)
    return observe(run, model, root)


@scenario
def fit_shuffled_with_sanity_check(pl, root):
    train = loader(regression(), shuffle=True)
    run, model = _fit(pl, root, train=train, val=loader(regression(32, seed=2)), max_epochs=2)
    return observe(run, model, root)


@scenario
def fit_shuffled_without_sanity_check(pl, root):
    train = loader(regression(), shuffle=True)
    val = loader(regression(32, seed=2))
    run, model = _fit(pl, root, train=train, val=val, max_epochs=2, num_sanity_val_steps=0)
    return observe(run, model, root)


@scenario
def fit_shuffled_val_check_interval_half(pl, root):
    train = loader(regression(), shuffle=True)
    val = loader(regression(32, seed=2), shuffle=True)
    run, model = _fit(pl, root, train=train, val=val, max_epochs=2, val_check_interval=0.5)
    return observe(run, model, root)


@scenario
def fit_shuffled_two_val_loaders_limited(pl, root):
    train = loader(regression(), shuffle=True)
    vals = [loader(regression(32, seed=2), shuffle=True), loader(regression(24, seed=3))]

    class TwoVal(kit(pl).Regressor):
        def validation_step(self, batch, batch_idx, dataloader_idx=0):
            x, y = batch
            self.log("valid_loss", F.mse_loss(self(x), y))

    run, model = _fit(
        pl, root, TwoVal(), train, vals, max_epochs=2, limit_train_batches=5, limit_val_batches=2
    )
    return observe(run, model, root)


@scenario
def fit_without_val_uses_max_steps(pl, root):
    run, model = _fit(pl, root, max_steps=11, max_epochs=-1, log_every_n_steps=3)
    return observe(run, model, root)


@scenario
def val_check_interval_integer(pl, root):
    run, model = _fit(
        pl,
        root,
        val=loader(regression(16)),
        max_epochs=2,
        val_check_interval=3,
        log_every_n_steps=2,
    )
    return observe(run, model, root)


@scenario
def val_check_interval_across_epochs(pl, root):
    run, model = _fit(
        pl,
        root,
        val=loader(regression(16)),
        max_epochs=4,
        val_check_interval=5,
        check_val_every_n_epoch=None,
    )
    return observe(run, model, root)


@scenario
def check_val_every_second_epoch(pl, root):
    run, model = _fit(pl, root, val=loader(regression(16)), max_epochs=4, check_val_every_n_epoch=2)
    return observe(run, model, root)


@scenario
def limit_batches_as_fractions(pl, root):
    run, model = _fit(
        pl,
        root,
        val=loader(regression(32)),
        max_epochs=2,
        limit_train_batches=0.5,
        limit_val_batches=0.25,
    )
    return observe(run, model, root)


@scenario
def limit_train_batches_zero_skips_training(pl, root):
    run, model = _fit(pl, root, val=loader(regression(16)), max_epochs=2, limit_train_batches=0)
    return observe(run, model, root)


@scenario
def max_steps_mid_epoch_with_validation(pl, root):
    model = kit(pl).RecordingRegressor()
    run, model = _fit(pl, root, model, val=loader(regression(16)), max_steps=5, max_epochs=-1)
    return observe(run, model, root)


@scenario
def stop_requested_mid_epoch_validates_then_stops(pl, root):
    class StopAtFifthBatch(pl.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if trainer.global_step == 5:
                trainer.should_stop = True

    run, model = _fit(
        pl, root, kit(pl).RecordingRegressor(), val=loader(regression(16)), max_epochs=3,
        val_check_interval=3, callbacks=[StopAtFifthBatch()],
    )  # fmt: skip
    return observe(run, model, root)


# ---------------------------------------------------------------------- hooks
@scenario
def hook_order_fit(pl, root):
    callback = kit(pl).RecordingCallback()
    model = kit(pl).RecordingRegressor()
    run = trainer(
        pl, root, max_epochs=1, limit_train_batches=2, limit_val_batches=1, callbacks=[callback]
    )
    run.fit(model, loader(regression()), loader(regression(16)))
    return observe(run, model, root, callbacks=(callback,))


@scenario
def hook_order_validate_test_predict(pl, root):
    callback = kit(pl).RecordingCallback()
    model = kit(pl).RecordingRegressor()
    run = trainer(pl, root, limit_val_batches=1, limit_test_batches=1, callbacks=[callback])
    validated = run.validate(model, loader(regression(16)))
    tested = run.test(model, loader(regression(16)))
    predicted = run.predict(model, loader(regression(16)))
    return observe(
        run, model, root, callbacks=(callback,), validated=validated, tested=tested,
        predicted=predicted,
    )  # fmt: skip


@scenario
def step_methods_without_batch_idx(pl, root):
    class NoIndex(kit(pl).Regressor):
        def training_step(self, batch):
            x, y = batch
            loss = F.mse_loss(self(x), y)
            self.log("train_loss", loss)
            return loss

        def validation_step(self, batch):
            self.log("valid_loss", F.mse_loss(self(batch[0]), batch[1]))

        def test_step(self, batch):
            self.log("test_loss", F.mse_loss(self(batch[0]), batch[1]))

        def predict_step(self, batch):
            return self(batch[0])

    model = NoIndex()
    run = trainer(pl, root, max_epochs=1)
    run.fit(model, loader(regression()), loader(regression(16)))
    tested = run.test(model, loader(regression(16)))
    predicted = run.predict(model, loader(regression(16)))
    return observe(run, model, root, tested=tested, predicted=predicted)


@scenario
def submodule_kept_in_eval_mode_stays_there(pl, root):
    class Frozen(kit(pl).Regressor):
        def on_train_start(self):
            self.dropout.eval()  # a frozen part the user keeps in eval mode

        def on_train_batch_start(self, batch, batch_idx):
            self.log("dropout_training", float(self.dropout.training), on_step=True)

    run, model = _fit(pl, root, Frozen(), val=loader(regression(16)), max_epochs=2)
    return observe(run, model, root, dropout_training=model.dropout.training)


# ---------------------------------------------------------------------- self.log
@scenario
def log_options(pl, root):
    class Options(kit(pl).Regressor):
        def training_step(self, batch, batch_idx):
            x, y = batch
            loss = F.mse_loss(self(x), y)
            self.log("step_only", loss, on_step=True, on_epoch=False)
            self.log("epoch_only", loss, on_step=False, on_epoch=True)
            self.log("both", loss, on_step=True, on_epoch=True, prog_bar=True)
            self.log("summed", loss, on_epoch=True, reduce_fx="sum")
            self.log("maximum", loss, on_step=False, on_epoch=True, reduce_fx="max")
            self.log("minimum", loss, on_step=False, on_epoch=True, reduce_fx="min")
            self.log("hidden", loss, logger=False, prog_bar=True)
            self.log("weighted", loss, on_step=False, on_epoch=True, batch_size=2 + batch_idx)
            self.log("number", 1.5 + batch_idx)
            return loss

        def validation_step(self, batch, batch_idx):
            loss = F.mse_loss(self(batch[0]), batch[1])
            self.log("v_default", loss)
            self.log("v_step", loss, on_step=True)
            self.log_dict({"v_a": loss, "v_b": 2 * loss}, prog_bar=True)

    run, model = _fit(
        pl, root, Options(), loader(regression(60)), loader(regression(20)), max_epochs=2,
        log_every_n_steps=2,
    )  # fmt: skip
    return observe(run, model, root)


@scenario
def reduce_fx_in_any_spelling(pl, root):
    class Reductions(kit(pl).Regressor):
        def training_step(self, batch, batch_idx):
            loss = F.mse_loss(self(batch[0]), batch[1])
            self.log("upper_sum", loss, on_step=False, on_epoch=True, reduce_fx="SUM")
            self.log("torch_max", loss, on_step=False, on_epoch=True, reduce_fx=torch.max)
            self.log("torch_mean", loss, on_step=False, on_epoch=True, reduce_fx=torch.mean)
            return loss

    run, model = _fit(pl, root, Reductions(), max_epochs=1)
    return observe(run, model, root)


@scenario
def log_from_other_hooks(pl, root):
    class Hooks(kit(pl).Regressor):
        def on_train_start(self):
            self.log("from_train_start", 1.0)

        def on_train_epoch_start(self):
            self.log("from_epoch_start", float(self.current_epoch))

        def on_train_batch_end(self, outputs, batch, batch_idx):
            self.log("from_batch_end", float(batch_idx))

        def on_validation_epoch_end(self):
            self.log("from_val_epoch_end", 3.0)

        def on_train_epoch_end(self):
            self.log("from_train_epoch_end", 4.0)

    run, model = _fit(
        pl, root, Hooks(), val=loader(regression(16)), max_epochs=2, log_every_n_steps=2
    )
    return observe(run, model, root)


@scenario
def one_name_logged_from_two_hooks(pl, root):
    class Twice(kit(pl).Regressor):
        def training_step(self, batch, batch_idx):
            self.log("shared", float(batch_idx))
            self.log("forked", float(batch_idx), on_epoch=True, prog_bar=True)
            return super().training_step(batch, batch_idx)

        def on_train_batch_end(self, outputs, batch, batch_idx):
            self.log("shared", -float(batch_idx))

        def on_train_epoch_end(self):
            self.log("shared", 100.0 + self.current_epoch)
            self.log("forked", 200.0 + self.current_epoch, prog_bar=True)

        def validation_step(self, batch, batch_idx):
            self.log("valid", float(batch_idx), on_step=True)

        def on_validation_epoch_end(self):
            self.log("valid", 50.0 + self.current_epoch)

    run, model = _fit(
        pl, root, Twice(), val=loader(regression(16)), max_epochs=2, log_every_n_steps=3
    )
    return observe(run, model, root)


@scenario
def logged_metrics_after_every_batch(pl, root):
    class Snapshots(pl.Callback):
        def __init__(self):
            self.seen = []

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            self.seen.append(sorted(trainer.logged_metrics))

    snapshots = Snapshots()
    run, model = _fit(pl, root, max_epochs=1, log_every_n_steps=3, callbacks=[snapshots])
    return observe(run, model, root, snapshots=snapshots.seen)


@scenario
def batch_size_inferred_from_nested_batches(pl, root):
    class DictBatches(torch.utils.data.Dataset):
        def __len__(self):
            return 30

        def __getitem__(self, index):
            x = torch.full((4,), float(index) / 30)
            return {"inputs": [x, {"mask": torch.ones(2)}], "target": x.sum(0, keepdim=True)}

    class Nested(kit(pl).Regressor):
        def training_step(self, batch, batch_idx):
            loss = F.mse_loss(self(batch["inputs"][0]), batch["target"])
            self.log("train_loss", loss, on_step=False, on_epoch=True)
            return loss

        def validation_step(self, batch, batch_idx):
            self.log("valid_loss", F.mse_loss(self(batch["inputs"][0]), batch["target"]))

    data = torch.utils.data.DataLoader(DictBatches(), batch_size=7)
    run, model = _fit(
        pl,
        root,
        Nested(),
        data,
        torch.utils.data.DataLoader(DictBatches(), batch_size=8),
        max_epochs=1,
    )
    return observe(run, model, root)


class _Batches:
    """Batches of every structure Lightning infers a size from, one structure per batch."""

    @dataclasses.dataclass
    class Fields:
        name: str
        x: torch.Tensor
        y: torch.Tensor

    class Wrapped:
        def __init__(self, tensor):
            self.tensor = tensor

        def __iter__(self):
            return iter([self.tensor])

    @staticmethod
    def make(index, x, y):
        ahead = x[:2]  # a tensor found first whose length is not the batch's
        kinds = [
            lambda: {"text": ["word"] * len(x), "x": x, "y": y},
            lambda: ("a string", x, y),
            lambda: (torch.tensor(5.0), x, y),
            lambda: {"count": 3, "ints": [1, 2], "x": x, "y": y},
            lambda: {"in": {"deep": [ahead]}, "x": x, "y": y},
            lambda: _Batches.Fields("name", x, y),
            lambda: {"fields": _Batches.Fields("name", ahead, y), "x": x, "y": y},
            lambda: (_Batches.Wrapped(ahead), x, y),
            lambda: (collections.deque([ahead]), x, y),
            lambda: ((t for t in [ahead]), x, y),
            lambda: ([], None, (1, 2), {1, 2}, x, y),
        ]
        return kinds[index % len(kinds)]()

    @staticmethod
    def inputs(batch):
        if isinstance(batch, _Batches.Fields):
            return batch.x, batch.y
        if isinstance(batch, dict):
            return batch["x"], batch["y"]
        return batch[-2], batch[-1]

    @staticmethod
    def loader(samples, sizes):
        data = regression(samples)
        starts = [sum(sizes[:i]) for i in range(len(sizes))]
        batches = [
            list(range(start, start + size)) for start, size in zip(starts, sizes, strict=True)
        ]

        def collate(items):
            x, y, _ = (torch.stack(column) for column in zip(*items, strict=True))
            return _Batches.make(starts.index(int(items[0][2])), x, y)

        indexed = [(x, y, torch.tensor([i])) for i, (x, y) in enumerate(data)]
        return torch.utils.data.DataLoader(indexed, batch_sampler=batches, collate_fn=collate)


@scenario
def batch_size_inferred_from_every_batch_type(pl, root):
    class Inferred(kit(pl).Regressor):
        def training_step(self, batch, batch_idx):
            x, y = _Batches.inputs(batch)
            loss = F.mse_loss(self(x), y)
            self.log("weighted_idx", float(batch_idx), on_step=False, on_epoch=True)
            self.log("train_loss", loss, on_epoch=True)
            return loss

        def validation_step(self, batch, batch_idx):
            x, y = _Batches.inputs(batch)
            self.log("valid_idx", float(batch_idx))
            self.log("valid_loss", F.mse_loss(self(x), y))

    sizes = [3, 5, 2, 7, 4, 6, 3, 5, 8, 2, 4]
    train = _Batches.loader(sum(sizes), sizes)
    val = _Batches.loader(sum(sizes), sizes[::-1])
    run, model = _fit(pl, root, Inferred(), train, val, max_epochs=1, log_every_n_steps=4)
    return observe(run, model, root)


@scenario
def batch_without_a_tensor_needs_a_batch_size(pl, root):
    class Lists(kit(pl).Regressor):
        def training_step(self, batch, batch_idx):
            x, y = (torch.tensor(column) for column in batch)
            self.log("given", float(batch_idx), on_epoch=True, batch_size=len(x))
            self.log("step_only", float(batch_idx))
            loss = F.mse_loss(self(x), y)
            self.log("inferred", loss, on_epoch=True)
            return loss

    def as_lists(items):
        return [torch.stack(column).tolist() for column in zip(*items, strict=True)]

    train = loader(regression(), collate_fn=as_lists)
    run, model = _fit(pl, root, Lists(), train, max_epochs=1)
    return observe(run, model, root)


@scenario
def torchmetrics_objects_logged(pl, root):
    import torchmetrics

    class Metrics(kit(pl).Classifier):
        def __init__(self):
            super().__init__()
            self.train_accuracy = torchmetrics.Accuracy(task="multiclass", num_classes=3)
            self.val_accuracy = torchmetrics.Accuracy(task="multiclass", num_classes=3)

        def training_step(self, batch, batch_idx):
            x, y = batch
            logits = self(x)
            self.train_accuracy(logits, y)
            self.log("train_accuracy", self.train_accuracy, on_step=True, on_epoch=True)
            return F.cross_entropy(logits, y)

        def validation_step(self, batch, batch_idx):
            x, y = batch
            self.val_accuracy.update(self(x), y)
            self.log("val_accuracy", self.val_accuracy)

    run, model = _fit(
        pl, root, Metrics(), loader(classification()), loader(classification(40, seed=4)),
        max_epochs=2, log_every_n_steps=3,
    )  # fmt: skip
    return observe(run, model, root)


@scenario
def torchmetrics_reset_and_computed_where_lightning_does(pl, root):
    import torchmetrics

    class Counts(pl.Callback):
        """What each metric holds at the hooks around its reset."""

        def __init__(self):
            self.seen = []

        def _record(self, where, module):
            self.seen.append([where, *(int(m._update_count) for m in module.tracked())])

        def on_train_epoch_end(self, trainer, pl_module):
            self._record("train_epoch_end", pl_module)

        def on_train_epoch_start(self, trainer, pl_module):
            self._record("train_epoch_start", pl_module)

        def on_validation_start(self, trainer, pl_module):
            self._record("validation_start", pl_module)

        def on_validation_end(self, trainer, pl_module):
            self._record("validation_end", pl_module)

        def on_test_end(self, trainer, pl_module):
            self._record("test_end", pl_module)

    class Metrics(kit(pl).Classifier):
        def __init__(self):
            super().__init__()
            self.step_acc = torchmetrics.Accuracy(task="multiclass", num_classes=3)
            self.epoch_acc = torchmetrics.Accuracy(task="multiclass", num_classes=3)
            self.val_accs = torch.nn.ModuleList(
                torchmetrics.Accuracy(task="multiclass", num_classes=3) for _ in range(2)
            )
            self.unlogged = torchmetrics.MeanMetric()
            self.collection = torchmetrics.MetricCollection(
                {"prec": torchmetrics.Precision(task="multiclass", num_classes=3),
                 "rec": torchmetrics.Recall(task="multiclass", num_classes=3)},
                prefix="val_",
            )  # fmt: skip
            self.test_acc = torchmetrics.Accuracy(task="multiclass", num_classes=3)

        def tracked(self):
            return [self.step_acc, self.epoch_acc, *self.val_accs, self.unlogged, self.test_acc]

        def training_step(self, batch, batch_idx):
            x, y = batch
            logits = self(x)
            self.log("step_acc", self.step_acc(logits, y), on_step=True, on_epoch=False)
            self.epoch_acc.update(logits, y)
            self.log("epoch_acc", self.epoch_acc, on_step=False, on_epoch=True, prog_bar=True)
            self.unlogged.update(F.cross_entropy(logits, y))
            return F.cross_entropy(logits, y)

        def on_train_epoch_end(self):
            self.log("by_hand", self.unlogged.compute())
            self.log("epoch_acc_seen", self.epoch_acc.compute())

        def validation_step(self, batch, batch_idx, dataloader_idx=0):
            x, y = batch
            logits = self(x)
            self.val_accs[dataloader_idx](logits, y)
            self.log("val_acc", self.val_accs[dataloader_idx], on_step=True, on_epoch=True)
            if dataloader_idx == 0:
                self.collection.update(logits, y)
                self.log_dict(self.collection)

        def test_step(self, batch, batch_idx):
            x, y = batch
            self.test_acc(self(x), y)
            self.log("test_acc", self.test_acc)

    counts = Counts()
    vals = [loader(classification(40, seed=4)), loader(classification(24, seed=5))]
    run, model = _fit(
        pl, root, Metrics(), loader(classification()), vals, max_epochs=2, log_every_n_steps=3,
        val_check_interval=0.5, callbacks=[counts],
    )  # fmt: skip
    tested = run.test(model, loader(classification(16, seed=6)))
    return observe(run, model, root, counts=counts.seen, tested=tested)


# ---------------------------------------------------------------------- several loaders
class _TwoLoaders:
    @staticmethod
    def module(pl: Any, add_dataloader_idx: bool = True) -> Any:
        class Two(kit(pl).Regressor):
            def validation_step(self, batch, batch_idx, dataloader_idx=0):
                loss = F.mse_loss(self(batch[0]), batch[1])
                self.log("valid_loss", loss, add_dataloader_idx=add_dataloader_idx and True)
                if not add_dataloader_idx:
                    self.log(f"valid_loss_{dataloader_idx}", loss, add_dataloader_idx=False)

            def test_step(self, batch, batch_idx, dataloader_idx=0):
                self.log("test_loss", F.mse_loss(self(batch[0]), batch[1]))

        return Two()


@scenario
def two_validation_loaders(pl, root):
    vals = [loader(regression(16, seed=5)), loader(regression(24, seed=6))]
    run, model = _fit(pl, root, _TwoLoaders.module(pl), val=vals, max_epochs=2)
    validated = run.validate(model, vals)
    return observe(run, model, root, validated=validated)


@scenario
def two_test_loaders(pl, root):
    model = _TwoLoaders.module(pl)
    run = trainer(pl, root)
    tested = run.test(model, [loader(regression(16, seed=5)), loader(regression(8, seed=6))])
    return observe(run, model, root, tested=tested)


@scenario
def three_loaders_with_every_log_option(pl, root):
    class Three(kit(pl).Regressor):
        def validation_step(self, batch, batch_idx, dataloader_idx=0):
            loss = F.mse_loss(self(batch[0]), batch[1])
            self.log("valid_loss", loss, prog_bar=True)
            self.log("per_step", loss, on_step=True, on_epoch=True)
            self.log(f"own_{dataloader_idx}", loss, add_dataloader_idx=False)
            if dataloader_idx == 1:
                self.log("second_only", loss, reduce_fx="max")
            self.log_dict({"a": loss, "b": 2 * loss})

        def on_validation_batch_end(self, outputs, batch, batch_idx, dataloader_idx=0):
            self.log("batch_end", float(batch_idx), on_step=True, prog_bar=True)

        def on_validation_epoch_end(self):
            self.log("at_epoch_end", 7.0 + self.current_epoch)

        def test_step(self, batch, batch_idx, dataloader_idx=0):
            self.log("test_loss", F.mse_loss(self(batch[0]), batch[1]), on_step=True)

    vals = [loader(regression(16, seed=5)), loader(regression(24, seed=6)), loader(regression(8))]
    run, model = _fit(pl, root, Three(), val=vals, max_epochs=2, log_every_n_steps=2)
    validated = run.validate(model, {"first": vals[0], "second": vals[1]})
    tested = run.test(model, vals)
    return observe(run, model, root, validated=validated, tested=tested)


@scenario
def one_name_from_two_loaders_without_their_index(pl, root):
    class Merged(kit(pl).Regressor):
        def validation_step(self, batch, batch_idx, dataloader_idx=0):
            loss = F.mse_loss(self(batch[0]), batch[1])
            self.log("merged", loss, add_dataloader_idx=False)

    vals = [loader(regression(16, seed=5)), loader(regression(8, seed=6))]
    run, model = _fit(pl, root, Merged(), val=vals, max_epochs=1)
    return observe(run, model, root)


@scenario
def several_loaders_without_a_dataloader_idx_argument(pl, root):
    model = kit(pl).RecordingRegressor()
    run = trainer(pl, root, max_epochs=1)
    vals = [loader(regression(16, seed=5)), loader(regression(8, seed=6))]
    failures = []
    for call in (
        lambda: run.fit(model, loader(regression()), vals),
        lambda: run.validate(model, vals),
        lambda: run.test(model, vals),
    ):
        try:
            call()
        except Exception as error:
            failures.append(f"{type(error).__name__}: {error}")
    return observe(run, model, root, failures=failures)


@scenario
def trainer_shows_loaders_as_given(pl, root):
    class Steps(kit(pl).Regressor):
        def validation_step(self, batch, batch_idx, dataloader_idx=0):
            pass

        def test_step(self, batch, batch_idx, dataloader_idx=0):
            pass

    def shape(loaders):
        if isinstance(loaders, dict):
            return {k: type(v).__name__ for k, v in loaders.items()}
        if isinstance(loaders, (list, tuple)):
            return [type(v).__name__ for v in loaders]
        return type(loaders).__name__

    model, run = Steps(), trainer(pl, root, max_epochs=1)
    seen = [shape(run.val_dataloaders), shape(run.test_dataloaders)]
    run.fit(model, loader(regression()), loader(regression(8)))
    seen.append(shape(run.val_dataloaders))
    run.validate(model, {"a": loader(regression(8)), "b": loader(regression(16))})
    seen.append(shape(run.val_dataloaders))
    run.test(model, (loader(regression(8)), loader(regression(8))))
    seen.append(shape(run.test_dataloaders))
    run.predict(model, [loader(regression(8))])
    seen.append(shape(run.predict_dataloaders))
    return observe(run, model, root, seen=seen)


# ---------------------------------------------------------------------- callbacks
@scenario
def early_stopping_on_validation(pl, root):
    stop = pl.callbacks.EarlyStopping(monitor="valid_loss", patience=1, min_delta=0.5)
    run, model = _fit(pl, root, val=loader(regression(16)), max_epochs=10, callbacks=[stop])
    return observe(run, model, root, stopped_epoch=stop.stopped_epoch, wait=stop.wait_count)


@scenario
def early_stopping_on_a_training_metric(pl, root):
    stop = pl.callbacks.EarlyStopping(monitor="train_loss_epoch", patience=0, min_delta=10.0)
    run, model = _fit(pl, root, max_epochs=5, callbacks=[stop])
    return observe(run, model, root, stopped_epoch=stop.stopped_epoch)


@scenario
def early_stopping_respects_min_epochs(pl, root):
    stop = pl.callbacks.EarlyStopping(monitor="valid_loss", patience=0, min_delta=100.0)
    run, model = _fit(
        pl, root, val=loader(regression(16)), max_epochs=6, min_epochs=3, callbacks=[stop]
    )
    return observe(run, model, root)


@scenario
def checkpoint_top_two_by_validation(pl, root):
    checkpoint = pl.callbacks.ModelCheckpoint(monitor="valid_loss", save_top_k=2, save_last=True)
    run, model = _fit(pl, root, val=loader(regression(16)), max_epochs=4, callbacks=[checkpoint])
    return observe(run, model, root)


@scenario
def checkpoint_filename_template(pl, root):
    checkpoint = pl.callbacks.ModelCheckpoint(
        monitor="valid_loss", filename="{epoch}-{valid_loss:.2f}", mode="min", save_top_k=1
    )
    run, model = _fit(pl, root, val=loader(regression(16)), max_epochs=3, callbacks=[checkpoint])
    return observe(run, model, root)


@scenario
def checkpoint_save_last_without_monitor(pl, root):
    checkpoint = pl.callbacks.ModelCheckpoint(save_last=True)
    run, model = _fit(pl, root, val=loader(regression(16)), max_epochs=2, callbacks=[checkpoint])
    return observe(run, model, root)


@scenario
def checkpoint_monitor_training_epoch_metric(pl, root):
    checkpoint = pl.callbacks.ModelCheckpoint(monitor="train_loss_epoch", save_top_k=1)
    run, model = _fit(pl, root, val=loader(regression(16)), max_epochs=3, callbacks=[checkpoint])
    return observe(run, model, root)


@scenario
def checkpoint_every_second_epoch_with_last(pl, root):
    checkpoint = pl.callbacks.ModelCheckpoint(every_n_epochs=2, save_last=True, save_top_k=-1)
    run, model = _fit(pl, root, val=loader(regression(16)), max_epochs=3, callbacks=[checkpoint])
    return observe(run, model, root)


@scenario
def checkpoint_names_taken_get_a_version(pl, root):
    folder = str(root / "ckpts")
    for epochs in (1, 1):
        checkpoint = pl.callbacks.ModelCheckpoint(dirpath=folder, save_last=True)
        run, model = _fit(pl, root, max_epochs=epochs, callbacks=[checkpoint])
    return observe(run, model, root)


@scenario
def checkpoint_every_n_train_steps(pl, root):
    checkpoint = pl.callbacks.ModelCheckpoint(every_n_train_steps=3, save_top_k=-1)
    run, model = _fit(pl, root, max_epochs=2, callbacks=[checkpoint])
    return observe(run, model, root)


@scenario
def test_after_fit_uses_the_best_checkpoint(pl, root):
    checkpoint = pl.callbacks.ModelCheckpoint(monitor="valid_loss", save_top_k=1)
    run, model = _fit(pl, root, val=loader(regression(16)), max_epochs=3, callbacks=[checkpoint])
    tested = run.test(dataloaders=loader(regression(16, seed=9)))
    validated = run.validate(dataloaders=loader(regression(16, seed=9)))
    return observe(run, model, root, tested=tested, validated=validated)


@scenario
def learning_rate_monitor(pl, root):
    class Scheduled(kit(pl).Regressor):
        def configure_optimizers(self):
            optimizer = torch.optim.SGD(self.parameters(), lr=0.1, momentum=0.9)
            return [optimizer], [torch.optim.lr_scheduler.StepLR(optimizer, 1, gamma=0.5)]

    monitor = pl.callbacks.LearningRateMonitor(logging_interval="step", log_momentum=True)
    run, model = _fit(pl, root, Scheduled(), max_epochs=2, log_every_n_steps=2, callbacks=[monitor])
    return observe(run, model, root)


@scenario
def learning_rate_monitor_without_a_scheduler(pl, root):
    class Adam(kit(pl).Regressor):
        def configure_optimizers(self):
            return torch.optim.Adam(self.parameters(), lr=0.02, weight_decay=0.01)

    monitor = pl.callbacks.LearningRateMonitor(log_momentum=True, log_weight_decay=True)
    run, model = _fit(pl, root, Adam(), max_epochs=2, log_every_n_steps=3, callbacks=[monitor])
    return observe(run, model, root, lrs=monitor.lrs, momenta=monitor.last_momentum_values)


# ---------------------------------------------------------------------- optimizers
def _with_optimizers(pl: Any, configure: Callable[[Any], Any], **lightning_module_methods: Any):
    base = kit(pl).Regressor
    namespace = {"configure_optimizers": configure, **lightning_module_methods}
    return type("Configured", (base,), namespace)()


@scenario
def optimizer_and_epoch_scheduler(pl, root):
    def configure(self):
        optimizer = torch.optim.SGD(self.parameters(), lr=0.1)
        return {
            "optimizer": optimizer,
            "lr_scheduler": torch.optim.lr_scheduler.StepLR(optimizer, 1, 0.5),
        }

    run, model = _fit(pl, root, _with_optimizers(pl, configure), max_epochs=3)
    return observe(run, model, root, lr=run.optimizers[0].param_groups[0]["lr"])


@scenario
def step_scheduler_with_frequency(pl, root):
    def configure(self):
        optimizer = torch.optim.SGD(self.parameters(), lr=0.1)
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, 1, 0.9)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step", "frequency": 3},
        }

    run, model = _fit(pl, root, _with_optimizers(pl, configure), max_epochs=2)
    return observe(run, model, root, lr=run.optimizers[0].param_groups[0]["lr"])


@scenario
def plateau_scheduler_monitoring_validation(pl, root):
    def configure(self):
        optimizer = torch.optim.SGD(self.parameters(), lr=0.1)
        plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, patience=0, factor=0.5)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": plateau, "monitor": "valid_loss"},
        }

    run, model = _fit(
        pl, root, _with_optimizers(pl, configure), val=loader(regression(16)), max_epochs=4
    )
    return observe(run, model, root, lr=run.optimizers[0].param_groups[0]["lr"])


@scenario
def lists_of_optimizers_and_schedulers(pl, root):
    def configure(self):
        optimizer = torch.optim.Adam(self.parameters(), lr=0.01)
        return [optimizer], [torch.optim.lr_scheduler.ExponentialLR(optimizer, 0.5)]

    run, model = _fit(pl, root, _with_optimizers(pl, configure), max_epochs=2)
    return observe(run, model, root, lr=run.optimizers[0].param_groups[0]["lr"])


@scenario
def custom_scheduler_through_lr_scheduler_step(pl, root):
    class Halving:
        def __init__(self, optimizer):
            self.optimizer = optimizer

        def step(self, metric=None):
            for group in self.optimizer.param_groups:
                group["lr"] /= 2

        def state_dict(self):
            return {}

        def load_state_dict(self, state):
            pass

    def configure(self):
        optimizer = torch.optim.SGD(self.parameters(), lr=0.1)
        return {"optimizer": optimizer, "lr_scheduler": Halving(optimizer)}

    def lr_scheduler_step(self, scheduler, metric):
        scheduler.step()

    model = _with_optimizers(pl, configure, lr_scheduler_step=lr_scheduler_step)
    run, model = _fit(pl, root, model, max_epochs=3)
    return observe(run, model, root, lr=run.optimizers[0].param_groups[0]["lr"])


@scenario
def manual_optimization_two_optimizers(pl, root):
    class Manual(kit(pl).Regressor):
        def __init__(self):
            super().__init__()
            self.automatic_optimization = False
            self.other = torch.nn.Linear(4, 1)

        def training_step(self, batch, batch_idx):
            first, second = self.optimizers()
            x, y = batch
            loss = F.mse_loss(self(x), y)
            first.zero_grad()
            self.manual_backward(loss)
            first.step()
            other = F.mse_loss(self.other(x), y)
            second.zero_grad()
            self.manual_backward(other)
            second.step()
            self.log_dict({"loss": loss, "other": other}, prog_bar=True)
            scheduler = self.lr_schedulers()
            if self.trainer.is_last_batch:
                scheduler.step(loss.detach())

        def configure_optimizers(self):
            first = torch.optim.SGD(self.layer.parameters(), lr=0.1)
            second = torch.optim.Adam(self.other.parameters(), lr=0.01)
            plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(first, patience=0)
            return [first, second], [plateau]

    run, model = _fit(pl, root, Manual(), max_epochs=2)
    return observe(run, model, root)


@scenario
def accumulate_and_clip_by_norm(pl, root):
    run, model = _fit(
        pl, root, max_epochs=2, accumulate_grad_batches=3, gradient_clip_val=0.5,
        log_every_n_steps=1,
    )  # fmt: skip
    return observe(run, model, root)


@scenario
def clip_by_value(pl, root):
    run, model = _fit(
        pl, root, max_epochs=1, gradient_clip_val=0.05, gradient_clip_algorithm="value"
    )
    return observe(run, model, root)


# ---------------------------------------------------------------------- resume
@scenario
def resume_from_last_checkpoint_in_python(pl, root):
    checkpoint = pl.callbacks.ModelCheckpoint(save_last=True)
    first, _ = _fit(pl, root, val=loader(regression(16)), max_epochs=1, callbacks=[checkpoint])
    last = checkpoint.last_model_path
    callback = kit(pl).RecordingCallback()
    model = kit(pl).RecordingRegressor()
    resumed = trainer(
        pl, root, max_epochs=3, logger=pl.loggers.CSVLogger(str(root), name="resumed"),
        callbacks=[pl.callbacks.ModelCheckpoint(save_last=True), callback],
    )  # fmt: skip
    resumed.fit(model, loader(regression()), loader(regression(16)), ckpt_path=last)
    return observe(resumed, model, root, callbacks=(callback,))


# ---------------------------------------------------------------------- data modules
@scenario
def datamodule_hooks_and_hyperparameters(pl, root):
    calls: list[str] = []

    class Data(pl.LightningDataModule):
        def __init__(self, batch_size: int = 8, samples: int = 40):
            super().__init__()
            self.save_hyperparameters()

        def prepare_data(self):
            calls.append("prepare_data")

        def setup(self, stage):
            calls.append(f"setup({getattr(stage, 'value', stage)})")

        def teardown(self, stage):
            calls.append(f"teardown({getattr(stage, 'value', stage)})")

        def train_dataloader(self):
            calls.append("train_dataloader")
            return loader(regression(self.hparams.samples), self.hparams.batch_size, shuffle=True)

        def val_dataloader(self):
            calls.append("val_dataloader")
            return loader(regression(16), self.hparams.batch_size)

        def test_dataloader(self):
            calls.append("test_dataloader")
            return loader(regression(16, seed=7), self.hparams.batch_size)

        def on_before_batch_transfer(self, batch, dataloader_idx):
            calls.append(f"on_before_batch_transfer({dataloader_idx})")
            return batch

        def state_dict(self):
            calls.append("state_dict")
            return {"kept": 1}

    data = Data()
    checkpoint = pl.callbacks.ModelCheckpoint(save_last=True)
    run = trainer(pl, root, max_epochs=2, limit_train_batches=2, callbacks=[checkpoint])
    model = kit(pl).Regressor()
    run.fit(model, datamodule=data)
    tested = run.test(model, datamodule=data)
    stored = torch.load(checkpoint.last_model_path, weights_only=False)
    return observe(
        run, model, root, datamodule_calls=calls, tested=tested,
        datamodule_hparams=stored.get("datamodule_hyper_parameters"),
    )  # fmt: skip


@scenario
def hyperparameters_file(pl, root):
    run, model = _fit(
        pl, root, kit(pl).Classifier(lr=0.02, hidden=12), loader(classification()), max_epochs=1
    )
    return observe(run, model, root)


# ---------------------------------------------------------------------- loggers
@scenario
def csv_logger_used_directly(pl, root):
    logger = pl.loggers.CSVLogger(str(root), name="direct")
    logger.log_metrics({"a": 1.0})
    logger.log_metrics({"a": 2.0, "b": 3.0}, step=5)
    logger.log_metrics({"c": 4.0})
    logger.log_hyperparams({"lr": 0.1, "name": "x"})
    logger.save()
    return observe(
        root=root, version=logger.version, log_dir=str(Path(logger.log_dir).relative_to(root))
    )


@scenario
def default_logger(pl, root):
    run = pl.Trainer(
        default_root_dir=str(root), accelerator="cpu", max_epochs=1, enable_progress_bar=False,
        enable_model_summary=False,
    )  # fmt: skip
    model = kit(pl).Regressor()
    run.fit(model, loader(regression()))
    files = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
    return observe(
        run, model, root, logger=type(run.logger).__name__,
        loggers=[type(x).__name__ for x in run.loggers],
        has_experiment=hasattr(run.logger, "experiment"),
        files=[f.split("events.out")[0] for f in files],
    )  # fmt: skip


@scenario
def predict_returns_batches(pl, root):
    model = kit(pl).Classifier()
    run = trainer(pl, root)
    predicted = run.predict(model, loader(classification(20), batch_size=6))
    return observe(run, model, root, predicted=predicted)


@scenario
def validate_and_test_return_values(pl, root):
    model = kit(pl).Classifier()
    run = trainer(pl, root)
    validated = run.validate(model, loader(classification(20)))
    tested = run.test(model, loader(classification(20)))
    return observe(run, model, root, validated=validated, tested=tested)


# ---------------------------------------------------------------------- more of what users do
@scenario
def fast_dev_run_one_batch(pl, root):
    run, model = _fit(pl, root, val=loader(regression(16)), fast_dev_run=True)
    return observe(run, model, root)


@scenario
def manual_optimization_one_optimizer(pl, root):
    class Manual(kit(pl).Regressor):
        def __init__(self):
            super().__init__()
            self.automatic_optimization = False

        def training_step(self, batch, batch_idx):
            optimizer = self.optimizers()
            loss = F.mse_loss(self(batch[0]), batch[1])
            optimizer.zero_grad()
            self.manual_backward(loss)
            self.clip_gradients(optimizer, gradient_clip_val=0.5, gradient_clip_algorithm="norm")
            optimizer.step()
            self.log("loss", loss, prog_bar=True)

    run, model = _fit(pl, root, Manual(), val=loader(regression(16)), max_epochs=2)
    return observe(run, model, root)


@scenario
def load_from_checkpoint_restores_weights_and_hyperparameters(pl, root):
    checkpoint = pl.callbacks.ModelCheckpoint(monitor="val_loss", save_top_k=1)
    model = kit(pl).Classifier(lr=0.03, hidden=10)
    run = trainer(pl, root, max_epochs=2, callbacks=[checkpoint])
    run.fit(model, loader(classification()), loader(classification(40, seed=4)))
    loaded = type(model).load_from_checkpoint(checkpoint.best_model_path)
    return observe(
        module=loaded, root=root, loaded_hparams=dict(loaded.hparams),
        loaded_training=loaded.training,
    )  # fmt: skip


@scenario
def test_and_validate_with_explicit_ckpt_paths(pl, root):
    checkpoint = pl.callbacks.ModelCheckpoint(monitor="valid_loss", save_top_k=1, save_last=True)
    run, model = _fit(pl, root, val=loader(regression(16)), max_epochs=3, callbacks=[checkpoint])
    best = run.test(model, loader(regression(16, seed=9)), ckpt_path="best")
    last = run.validate(model, loader(regression(16, seed=9)), ckpt_path="last")
    return observe(run, model, root, best=best, last=last)


@scenario
def early_stopping_in_max_mode_with_threshold(pl, root):
    class Accuracy(kit(pl).Classifier):
        pass

    stop = pl.callbacks.EarlyStopping(monitor="val_acc", mode="max", stopping_threshold=0.3)
    run, model = _fit(
        pl, root, Accuracy(), loader(classification()), loader(classification(40, seed=4)),
        max_epochs=8, callbacks=[stop],
    )  # fmt: skip
    return observe(run, model, root, stopped_epoch=stop.stopped_epoch)


@scenario
def two_predict_loaders(pl, root):
    model = kit(pl).Classifier()
    run = trainer(pl, root)
    predicted = run.predict(
        model, [loader(classification(12), 5), loader(classification(7, seed=3), 4)]
    )
    return observe(run, model, root, predicted=predicted)


@scenario
def datamodule_to_validate_test_predict(pl, root):
    class Data(pl.LightningDataModule):
        def val_dataloader(self):
            return loader(classification(24, seed=5))

        def test_dataloader(self):
            return loader(classification(24, seed=6))

        def predict_dataloader(self):
            return loader(classification(10, seed=7), 4)

    model = kit(pl).Classifier()
    run = trainer(pl, root)
    validated = run.validate(model, datamodule=Data())
    tested = run.test(model, datamodule=Data())
    predicted = run.predict(model, datamodule=Data())
    return observe(run, model, root, validated=validated, tested=tested, predicted=predicted)


@scenario
def checkpoint_hooks_add_to_the_checkpoint(pl, root):
    class Keeps(kit(pl).Regressor):
        def on_save_checkpoint(self, checkpoint):
            checkpoint["extra"] = {"epoch_seen": self.current_epoch}

        def on_load_checkpoint(self, checkpoint):
            self.restored = checkpoint["extra"]

    checkpoint = pl.callbacks.ModelCheckpoint(save_last=True)
    first, _ = _fit(pl, root, Keeps(), max_epochs=2, callbacks=[checkpoint])
    model = Keeps()
    run = trainer(pl, root, max_epochs=3)
    run.fit(model, loader(regression()), ckpt_path=checkpoint.last_model_path)
    stored = torch.load(checkpoint.last_model_path, weights_only=False)
    return observe(run, model, root, restored=model.restored, extra=stored["extra"])


# ---------------------------------------------------------------------- checkpoints and resuming
# (a model without dropout on unshuffled data draws no random numbers, so these compare what
# checkpointing does, not how each framework's generators move)
def _steady(pl: Any, hooks: tuple[str, ...] = ()) -> Any:
    class Steady(kit(pl).Regressor):
        def __init__(self):
            super().__init__()
            self.dropout = torch.nn.Identity()

    return recording_class(Steady, hooks)() if hooks else Steady()


@scenario
def checkpoint_names_taken_by_an_earlier_run(pl, root):
    folder = str(root / "ckpts")
    for _ in range(2):
        checkpoint = pl.callbacks.ModelCheckpoint(
            dirpath=folder, every_n_train_steps=3, save_top_k=-1, save_last=True
        )
        run, model = _fit(
            pl, root, _steady(pl), max_epochs=1, log_every_n_steps=1, callbacks=[checkpoint]
        )
    return observe(run, model, root)


@scenario
def checkpoint_last_follows_the_files_written(pl, root):
    """last.ckpt is rewritten with each top-k file (and once at the end of a fit that wrote
    none): an epoch that does not improve leaves it where it was."""
    steps = {}
    for name, options in {
        "no_improvement": {"monitor": "valid_loss", "mode": "max", "save_last": True},
        "no_top_k": {"save_top_k": 0, "save_last": True},
        "every_second_epoch": {"every_n_epochs": 2, "save_last": True},
    }.items():
        checkpoint = pl.callbacks.ModelCheckpoint(dirpath=str(root / name), **options)
        _fit(
            pl, root, _steady(pl), val=loader(regression(16)), max_epochs=3,
            log_every_n_steps=1, callbacks=[checkpoint], logger=False,
        )  # fmt: skip
        stored = torch.load(checkpoint.last_model_path, weights_only=False)
        steps[name] = [stored["epoch"], stored["global_step"]]
    return observe(root=root, last_checkpoint_steps=steps)


@scenario
def test_after_fit_without_a_model_loads_the_best_checkpoint(pl, root):
    checkpoint = pl.callbacks.ModelCheckpoint(monitor="valid_loss", mode="max")
    run, model = _fit(
        pl, root, _steady(pl), val=loader(regression(16)), max_epochs=3, log_every_n_steps=1,
        callbacks=[checkpoint],
    )  # fmt: skip
    tested = run.test(dataloaders=loader(regression(16, seed=9)))
    validated = run.validate(dataloaders=loader(regression(16, seed=9)))
    predicted = run.predict(dataloaders=loader(regression(8, seed=9)))
    return observe(
        run, model, root, tested=tested, validated=validated, predicted=predicted,
        ckpt_path=str(Path(run.ckpt_path).relative_to(root)),
    )  # fmt: skip


@scenario
def test_after_fit_without_any_checkpoint(pl, root):
    run, _ = _fit(pl, root, _steady(pl), max_epochs=1, enable_checkpointing=False, logger=False)
    return observe(tested=run.test(dataloaders=loader(regression(16, seed=9)), verbose=False))


def _resume_in_python(pl: Any, root: Path, logger_name: str) -> dict[str, Any]:
    """One epoch, then a fit resumed from its last.ckpt with its logger under `logger_name`."""
    checkpoint = pl.callbacks.ModelCheckpoint(save_last=True)
    _fit(
        pl, root, _steady(pl), val=loader(regression(16)), max_epochs=1, log_every_n_steps=1,
        callbacks=[checkpoint],
    )  # fmt: skip
    callback = kit(pl).RecordingCallback()
    hooks = tuple(h for h in MODULE_HOOKS if "_model_" not in h)  # *_model_*: item 11's
    model = _steady(pl, hooks)
    resumed = trainer(
        pl, root, max_epochs=3, log_every_n_steps=1,
        logger=pl.loggers.CSVLogger(str(root), name=logger_name),
        callbacks=[pl.callbacks.ModelCheckpoint(save_last=True), callback],
    )  # fmt: skip
    resumed.fit(
        model, loader(regression()), loader(regression(16)), ckpt_path=checkpoint.last_model_path
    )
    return observe(resumed, model, root, callbacks=(callback,))


@scenario
def resume_in_python_into_a_new_logger_folder(pl, root):
    """on_load_checkpoint (module, then callbacks) before configure_optimizers, then the sanity
    check; the new folder repeats no row of the checkpoint's own."""
    return _resume_in_python(pl, root, "resumed")


@scenario
def resume_in_python_into_the_checkpoints_logger_folder(pl, root):
    return _resume_in_python(pl, root, "run")


@scenario
def resume_mid_epoch_into_a_new_logger_folder(pl, root):
    """The same rows as Lightning (none repeated); ltrain trains on the batches after the
    checkpoint where Lightning reads the epoch's loader again from its start."""
    checkpoint = pl.callbacks.ModelCheckpoint(every_n_train_steps=3, save_top_k=-1)
    _fit(pl, root, _steady(pl), max_epochs=1, log_every_n_steps=1, callbacks=[checkpoint])
    model = _steady(pl)
    resumed = trainer(
        pl, root, max_epochs=2, log_every_n_steps=1,
        logger=pl.loggers.CSVLogger(str(root), name="resumed"),
    )  # fmt: skip
    resumed.fit(model, loader(regression()), ckpt_path=f"{checkpoint.dirpath}/epoch=0-step=3.ckpt")
    rows = observe(root=root)["metrics"]["resumed/version_0/metrics.csv"]["rows"]
    return observe(resumed, model, root, row_steps=[row[:2] for row in rows])


@scenario
def checkpoint_options_on_a_steady_model(pl, root):
    """Item 7's options without generator noise: what each ModelCheckpoint wrote and kept."""
    seen = {}
    for name, (options, val) in {
        "save_last_without_monitor": ({"save_last": True}, True),
        "training_epoch_metric": ({"monitor": "train_loss_epoch", "save_top_k": 1}, True),
        "training_epoch_metric_no_val": ({"monitor": "train_loss_epoch", "save_top_k": 2}, False),
        "on_train_epoch_end": ({"monitor": "valid_loss", "save_on_train_epoch_end": True}, True),
        "every_second_epoch_last": (
            {"every_n_epochs": 2, "save_last": True, "save_top_k": -1},
            True,
        ),
    }.items():
        folder = root / name
        checkpoint = pl.callbacks.ModelCheckpoint(dirpath=str(folder), **options)
        pl.seed_everything(0)
        _fit(
            pl, root, _steady(pl), val=loader(regression(16)) if val else None, max_epochs=3,
            log_every_n_steps=1, callbacks=[checkpoint], logger=False,
        )  # fmt: skip
        score = checkpoint.best_model_score
        seen[name] = {
            "files": sorted(p.name for p in folder.glob("*.ckpt")),
            "best": Path(checkpoint.best_model_path).name,
            "score": None if score is None else float(score),
            "top_k": {Path(k).name: float(v) for k, v in checkpoint.best_k_models.items()},
            "last": Path(checkpoint.last_model_path).name,
        }
    return observe(root=root, checkpoints_kept=seen)


@scenario
def early_stopping_on_training_metrics_of_a_steady_model(pl, root):
    """Item 8 without generator noise: with and without a validation loop."""
    seen = {}
    for name, (options, val) in {
        "no_validation": ({}, False),
        "check_on_train_epoch_end": ({"check_on_train_epoch_end": True}, True),
        "after_validation": ({"check_on_train_epoch_end": False}, True),
    }.items():
        stop = pl.callbacks.EarlyStopping(
            monitor="train_loss_epoch", patience=0, min_delta=10.0, **options
        )
        pl.seed_everything(0)
        run = trainer(pl, root, max_epochs=5, log_every_n_steps=1, callbacks=[stop], logger=False)
        try:
            run.fit(_steady(pl), loader(regression()), loader(regression(16)) if val else None)
        except RuntimeError as error:  # Lightning's type: the metric is not there yet
            seen[name] = str(error)
            continue
        seen[name] = [stop.stopped_epoch, stop.wait_count, run.current_epoch, run.global_step]
    return observe(root=root, stopped=seen)


@scenario
def early_stopping_is_not_checked_by_validate(pl, root):
    stop = pl.callbacks.EarlyStopping(monitor="train_loss_epoch", check_on_train_epoch_end=False)
    run = trainer(pl, root, callbacks=[stop])
    validated = run.validate(_steady(pl), loader(regression(16)))
    return observe(run, root=root, validated=validated, wait=stop.wait_count)


# ---------------------------------------------------------------------- callbacks beyond the core
def _backbone_model(pl: Any) -> Any:
    class WithBackbone(kit(pl).Regressor):
        """A batch-normed backbone the finetuning callback freezes, and a head Adam trains."""

        def __init__(self) -> None:
            super().__init__()
            self.backbone = torch.nn.Sequential(
                torch.nn.Linear(4, 8), torch.nn.BatchNorm1d(8), torch.nn.ReLU()
            )
            self.layer = torch.nn.Linear(8, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.layer(self.dropout(self.backbone(x)))

        def configure_optimizers(self) -> Any:
            return torch.optim.Adam(self.layer.parameters(), lr=0.01)

    return WithBackbone()


def _group_rates(pl: Any, seen: list) -> Any:
    """A LambdaCallback recording each epoch's learning rate of every parameter group."""
    return pl.callbacks.LambdaCallback(
        on_train_epoch_end=lambda trainer, module: seen.append(
            [round(g["lr"], 12) for g in trainer.optimizers[0].param_groups]
        )
    )


@scenario
def backbone_finetuning_unfreezes_with_growing_rate(pl, root):
    rates: list = []
    finetuning = pl.callbacks.BackboneFinetuning(
        unfreeze_backbone_at_epoch=1, lambda_func=lambda e: 1.5
    )
    run, model = _fit(
        pl, root, _backbone_model(pl), max_epochs=5, callbacks=[finetuning, _group_rates(pl, rates)]
    )
    frozen = [p.requires_grad for p in model.backbone.parameters()]
    return observe(run, model, root, rates=rates, requires_grad=frozen)


@scenario
def backbone_finetuning_resumes_its_parameter_groups(pl, root):
    checkpoint = pl.callbacks.ModelCheckpoint(save_last=True)
    callbacks = [pl.callbacks.BackboneFinetuning(unfreeze_backbone_at_epoch=1), checkpoint]
    _fit(pl, root, _backbone_model(pl), max_epochs=3, callbacks=callbacks)
    rates: list = []
    model = _backbone_model(pl)
    resumed = trainer(
        pl,
        root,
        max_epochs=5,
        logger=pl.loggers.CSVLogger(str(root), name="resumed"),
        callbacks=[
            pl.callbacks.BackboneFinetuning(unfreeze_backbone_at_epoch=1),
            _group_rates(pl, rates),
        ],
    )
    resumed.fit(model, loader(regression()), ckpt_path=checkpoint.last_model_path)
    return observe(resumed, model, root, rates=rates)


@scenario
def base_finetuning_subclass_adds_a_group_at_its_epoch(pl, root):
    class UnfreezeAtTwo(pl.callbacks.BaseFinetuning):
        def freeze_before_training(self, pl_module):
            self.freeze([pl_module.backbone[0], pl_module.backbone[1]], train_bn=False)

        def finetune_function(self, pl_module, epoch, optimizer):
            if epoch == 2:
                self.unfreeze_and_add_param_group(pl_module.backbone, optimizer, train_bn=False)

    rates: list = []
    run, model = _fit(
        pl,
        root,
        _backbone_model(pl),
        max_epochs=4,
        callbacks=[UnfreezeAtTwo(), _group_rates(pl, rates)],
    )
    flags = [p.requires_grad for p in model.backbone.parameters()]
    return observe(run, model, root, rates=rates, requires_grad=flags)


@scenario
def lambda_callback_hooks_in_order(pl, root):
    calls: list[str] = []

    def recorder(name: str) -> Any:
        return lambda trainer, module, *args, **kwargs: calls.append(name)

    names = ["setup", "on_fit_start", "on_train_epoch_start", "on_train_batch_end",
             "on_validation_end", "on_train_epoch_end", "on_fit_end", "teardown"]  # fmt: skip
    callback = pl.callbacks.LambdaCallback(**{name: recorder(name) for name in names})
    run, model = _fit(pl, root, val=loader(regression(16)), max_epochs=2, limit_train_batches=2,
                      callbacks=[callback])  # fmt: skip
    return observe(run, model, root, calls=calls)


@scenario
def on_exception_checkpoint_then_resume(pl, root):
    class FailsOnce(kit(pl).Regressor):
        fail = True

        def training_step(self, batch, batch_idx):
            if self.fail and self.current_epoch == 1 and batch_idx == 2:
                raise RuntimeError("boom")
            return super().training_step(batch, batch_idx)

    saver = pl.callbacks.OnExceptionCheckpoint(str(root / "saved"))
    try:
        _fit(pl, root, FailsOnce(), max_epochs=3, callbacks=[saver])
    except RuntimeError:
        pass
    saved = sorted(p.name for p in (root / "saved").iterdir())
    stored = torch.load(saver.ckpt_path, weights_only=False)
    model = FailsOnce()
    model.fail = False
    run = trainer(
        pl, root, max_epochs=3, callbacks=[pl.callbacks.OnExceptionCheckpoint(str(root / "saved"))]
    )
    run.fit(model, loader(regression()), ckpt_path=saver.ckpt_path)
    return observe(
        run, model, root, saved=saved, step_saved=stored["global_step"], epoch_saved=stored["epoch"],
        left=sorted(p.name for p in (root / "saved").iterdir()),
    )  # fmt: skip


@scenario
def gradient_accumulation_scheduled_by_epoch(pl, root):
    schedule = pl.callbacks.GradientAccumulationScheduler({1: 2, 3: 3})
    factors: list[int] = []
    record = pl.callbacks.LambdaCallback(
        on_train_epoch_end=lambda trainer, module: factors.append(trainer.accumulate_grad_batches)
    )
    run, model = _fit(pl, root, max_epochs=4, log_every_n_steps=2, callbacks=[schedule, record])
    return observe(run, model, root, factors=factors)


@scenario
def gradient_accumulation_scheduler_with_trainer_accumulation(pl, root):
    schedule = pl.callbacks.GradientAccumulationScheduler({0: 2})
    run, model = _fit(pl, root, max_epochs=1, accumulate_grad_batches=2, callbacks=[schedule])
    return observe(run, model, root)


@scenario
def max_time_spent_stops_the_fit(pl, root):
    class Slow(kit(pl).Regressor):
        def training_step(self, batch, batch_idx):
            time.sleep(0.02)
            return super().training_step(batch, batch_idx)

    run = trainer(pl, root, max_time={"seconds": 0.1}, log_every_n_steps=1)
    model = Slow()
    run.fit(model, loader(regression()))
    timers = [c for c in run.callbacks if isinstance(c, pl.callbacks.Timer)]
    # how far it got depends on the clock: what must agree is that time, not epochs, ended it
    return {
        "timers": len(timers),
        "stopped_early": run.should_stop and run.current_epoch < 2,
        "max_epochs": run.max_epochs,
        "train_elapsed_positive": timers[0].time_elapsed("train") > 0.1,
        "remaining": timers[0].time_remaining() <= 0,
    }


@scenario
def timer_state_resumes_the_budget(pl, root):
    checkpoint = pl.callbacks.ModelCheckpoint(save_last=True)
    _fit(pl, root, max_epochs=1, callbacks=[pl.callbacks.Timer(), checkpoint])
    stored = torch.load(checkpoint.last_model_path, weights_only=False)
    timer_state = next(v for k, v in stored["callbacks"].items() if "Timer" in k)
    spent = pl.callbacks.Timer(duration={"seconds": 0})
    run = trainer(pl, root, max_epochs=3, logger=pl.loggers.CSVLogger(str(root), name="again"),
                  callbacks=[spent])  # fmt: skip
    run.fit(kit(pl).Regressor(), loader(regression()), ckpt_path=checkpoint.last_model_path)
    return {
        "stages": sorted(timer_state["time_elapsed"]),
        "global_step_after": run.global_step,
        "epoch_after": run.current_epoch,
    }


# ---- issue 15: several training loaders
def _several_loaders_model(pl: Any) -> Any:
    class TwoSources(kit(pl).Regressor):
        """Trains on every loader's part of the combined batch (None where one is exhausted)."""

        def training_step(self, batch, batch_idx):
            parts = batch.values() if isinstance(batch, dict) else batch
            losses = [F.mse_loss(self(x), y) for x, y in (p for p in parts if p is not None)]
            loss = torch.stack(losses).mean()
            self.log("train_loss", loss, on_step=True, on_epoch=True)
            return loss

    return TwoSources()


@scenario
def several_training_loaders_in_every_mode(pl, root):
    seen = {}
    for name, make in {
        "list": lambda: [loader(regression(40)), loader(regression(24, seed=3))],
        "dict": lambda: {
            "a": loader(regression(40)),
            "b": loader(regression(24, seed=3), shuffle=True),
        },
        "min_size": lambda: pl.utilities.CombinedLoader(
            [loader(regression(40)), loader(regression(24, seed=3))], "min_size"
        ),
        "max_size": lambda: pl.utilities.CombinedLoader(
            {"a": loader(regression(40)), "b": loader(regression(24, seed=3))}, "max_size"
        ),
    }.items():
        model = _several_loaders_model(pl)
        run = trainer(pl, root, max_epochs=2, logger=pl.loggers.CSVLogger(str(root), name=name))
        run.fit(model, make())
        seen[name] = {"batches": run.num_training_batches, "steps": run.global_step,
                      "weights": [p.detach().clone() for p in model.parameters()]}  # fmt: skip
    return {**observe(root=root), "runs": seen}


@scenario
def sequential_training_loaders_are_refused(pl, root):
    combined = pl.utilities.CombinedLoader([loader(regression(16))] * 2, "sequential")
    run = trainer(pl, root, max_epochs=1)
    try:
        run.fit(kit(pl).Regressor(), combined)
    except ValueError as error:  # what user code catches (ltrain's is a ValueError subclass)
        return {"error": "ValueError", "says": "sequential" in str(error)}
    return {"error": None}


# ---- issue 15: module
class _Summarized(logging.Handler):
    """Collects what the ModelSummary callback logs (Lightning's and ltrain's loggers differ)."""

    def __init__(self, pl: Any) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []
        name = "ltrain" if pl.__name__ == "ltrain" else "lightning.pytorch.callbacks.model_summary"
        self.logger = logging.getLogger(name)

    def emit(self, record: logging.LogRecord) -> None:
        if "Total params" in record.getMessage():
            self.lines += record.getMessage().splitlines()

    def __enter__(self) -> _Summarized:
        self.level = self.logger.level
        self.logger.setLevel(logging.INFO)
        self.logger.addHandler(self)
        return self

    def __exit__(self, *exc: Any) -> None:
        self.logger.removeHandler(self)
        self.logger.setLevel(self.level)


def _nested(pl: Any) -> Any:
    class Nested(kit(pl).Regressor):
        def __init__(self) -> None:
            super().__init__()
            self.layer = torch.nn.Sequential(
                torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Sequential(torch.nn.Linear(8, 1))
            )
            self.example_input_array = torch.zeros(3, 4)

    return Nested()


@scenario
def model_summary_to_each_depth_with_sizes(pl, root):
    tables = {}
    for depth in (1, 2, -1):
        model = _nested(pl)
        model.layer[0].weight.requires_grad_(False)
        if depth != 1:
            model.example_input_array = None if depth == -1 else (torch.zeros(5, 4),)
        with _Summarized(pl) as summary:
            _fit(pl, root, model, max_steps=1, enable_model_summary=True,
                 callbacks=[pl.callbacks.ModelSummary(max_depth=depth)])  # fmt: skip
        tables[str(depth)] = summary.lines
    return tables


@scenario
def freeze_and_unfreeze(pl, root):
    model = _nested(pl)
    frozen = model.freeze()
    seen = {
        "returns_self": frozen is model,
        "frozen": [p.requires_grad for p in model.parameters()],
        "frozen_modes": [m.training for m in model.modules()],
    }
    model.unfreeze()
    seen["unfrozen"] = [p.requires_grad for p in model.parameters()]
    seen["unfrozen_modes"] = [m.training for m in model.modules()]
    return seen


@scenario
def torchscript_matches_forward(pl, root):
    model = _nested(pl)
    x = torch.randn(6, 4)
    expected = model.eval()(x)
    model.train()
    scripted = model.to_torchscript(file_path=str(root / "scripted.pt"))
    traced = model.to_torchscript(method="trace")
    seen = {
        "scripted": scripted(x),
        "loaded": torch.jit.load(str(root / "scripted.pt"))(x),
        "traced": traced(x),
        "expected": expected,
        "training_after": model.training,
    }
    for kwargs in ({"method": "neither"}, {"method": "trace"}):
        model.example_input_array = None
        try:
            model.to_torchscript(**kwargs)
        except ValueError as error:
            seen[f"error_{kwargs['method']}"] = str(error)
    return seen


@scenario
def all_gather_in_one_process(pl, root):
    gathered: list[Any] = []

    class Gathering(kit(pl).Regressor):
        def training_step(self, batch, batch_idx):
            value = self.all_gather({"x": batch[0], "n": [1, 2.5, True], "t": (batch[1][0],)})
            gathered.append(value)
            return super().training_step(batch, batch_idx)

    _fit(pl, root, Gathering(), max_steps=2)
    return {"gathered": [
        {"x": g["x"], "n": list(g["n"]), "t": list(g["t"])} for g in gathered
    ]}  # fmt: skip


@scenario
def strict_loading_false_loads_a_partial_checkpoint(pl, root):
    run, model = _fit(pl, root, max_steps=2)
    path = str(root / "partial.ckpt")
    run.save_checkpoint(path)

    class Grown(kit(pl).Regressor):
        def __init__(self) -> None:
            super().__init__()
            self.extra = torch.nn.Linear(2, 2)
            self.strict_loading = False

    loaded = Grown.load_from_checkpoint(path)
    seen: dict[str, Any] = {"weight": loaded.layer.weight, "strict": loaded.strict_loading}
    try:
        Grown.load_from_checkpoint(path, strict=True)
    except ValueError as error:
        seen["conflict"] = type(error).__name__
    restored = Grown()
    trainer(pl, root, logger=False).validate(restored, loader(regression()), ckpt_path=path)
    seen["restored_weight"] = restored.layer.weight
    return seen


# ---- issue 15: learning-rate finder
@scenario
def lr_find_in_both_modes(pl, root):
    seen = {}
    for mode in ("exponential", "linear"):
        model = kit(pl).Regressor()
        run = trainer(pl, root, logger=False, enable_checkpointing=False)
        finder = pl.tuner.Tuner(run).lr_find(
            model, loader(regression(160)), min_lr=1e-4, max_lr=0.5, num_training=18, mode=mode
        )
        seen[mode] = {"results": finder.results, "suggestion": finder.suggestion(), "lr": model.lr}
    return seen


# ---- issue 15: trainer
def _state(run: Any) -> tuple:
    state = run.state
    return (state.status.value, state.fn and state.fn.value, state.stage and state.stage.value)


@scenario
def trainer_state_in_hooks_and_after_runs(pl, root):
    seen: list[tuple] = []

    class Recorder(pl.Callback):
        def on_sanity_check_start(self, trainer, module):
            seen.append(("sanity", *_state(trainer), trainer.interrupted))

        def on_train_start(self, trainer, module):
            seen.append(("train", *_state(trainer), trainer.state.fn == "fit"))

        def on_validation_start(self, trainer, module):
            seen.append(("validation", *_state(trainer)))

        def on_test_start(self, trainer, module):
            seen.append(("test", *_state(trainer)))

    run = trainer(pl, root, max_epochs=1, limit_train_batches=2, callbacks=[Recorder()])
    seen.append(("built", *_state(run), run.interrupted))
    model = kit(pl).Regressor()
    run.fit(model, loader(regression()), loader(regression(16)))
    seen.append(("after fit", *_state(run), run.interrupted))
    run.test(model, loader(regression(16)), verbose=False)
    seen.append(("after test", *_state(run), run.interrupted))
    return {"seen": seen}


@scenario
def trainer_state_after_a_failed_fit(pl, root):
    class Failing(kit(pl).Regressor):
        def training_step(self, batch, batch_idx):
            raise ValueError("boom")

    run = trainer(pl, root, max_epochs=1)
    try:
        run.fit(Failing(), loader(regression()))
    except ValueError as error:
        return {"error": str(error), "state": _state(run), "interrupted": run.interrupted}
    return {"error": None}


@scenario
def trainer_device_attributes_print_and_init_module(pl, root):
    import contextlib
    import io

    run = trainer(pl, root)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        run.print("rank", 0, sep="-")
    dtypes = {}
    for precision in ("32-true", "64-true", "bf16-true", "bf16-mixed"):
        with trainer(pl, root, precision=precision).init_module():
            dtypes[precision] = str(torch.nn.Linear(2, 2).weight.dtype)
    with run.init_module(empty_init=True):
        layer = torch.nn.Linear(2, 2)
    return {
        "num_devices": run.num_devices,
        "device_ids": run.device_ids,
        "node_rank": run.node_rank,
        "accelerator": type(run.accelerator).__name__,
        "printed": out.getvalue(),
        "dtypes": dtypes,
        "empty_init": (str(layer.weight.dtype), str(layer.weight.device)),
        "default_dtype_after": str(torch.get_default_dtype()),
    }


def _loader_calls(pl: Any, root: Path, sizes: list[int] | None = None, **kwargs: Any) -> dict:
    """Which loader the module is asked for when, and the batches each epoch trains on."""
    calls: list[str] = []
    sizes = sizes or [16, 24, 32, 40, 48, 56, 64]

    class Reloading(kit(pl).Regressor):
        def train_dataloader(self):
            calls.append(f"train@{self.trainer.current_epoch}")
            return loader(regression(sizes[len(calls) % len(sizes)]))

        def val_dataloader(self):
            calls.append(f"val@{self.trainer.current_epoch}")
            return loader(regression(8 * (1 + len(calls) % 3), seed=2))

        def on_train_epoch_start(self):
            calls.append(f"epoch {self.current_epoch}: {self.trainer.num_training_batches}")

        def on_validation_epoch_start(self):
            calls.append(f"validate: {self.trainer.num_val_batches}")

    model = Reloading()
    run = trainer(pl, root, max_epochs=5, **kwargs)
    run.fit(model)
    return observe(run, model, root, calls=calls)


@scenario
def reload_dataloaders_every_epoch(pl, root):
    return _loader_calls(pl, root, reload_dataloaders_every_n_epochs=1)


@scenario
def reload_dataloaders_every_two_epochs(pl, root):
    return _loader_calls(pl, root, reload_dataloaders_every_n_epochs=2)


@scenario
def reload_dataloaders_every_three_epochs_validating_every_two(pl, root):
    return _loader_calls(pl, root, reload_dataloaders_every_n_epochs=3, check_val_every_n_epoch=2)


@scenario
def reload_dataloaders_without_sanity_check_validating_every_two(pl, root):
    return _loader_calls(pl, root, reload_dataloaders_every_n_epochs=1, check_val_every_n_epoch=2,
                         num_sanity_val_steps=0)  # fmt: skip


@scenario
def barebones_fit_validate_and_test(pl, root):
    calls: list[str] = []

    class Recorder(kit(pl).Regressor):
        def on_validation_start(self):
            calls.append(f"validation at step {self.global_step}")

    model = Recorder()
    run = trainer(pl, root, barebones=True, logger=None, max_epochs=2)
    run.fit(model, loader(regression()), loader(regression(16)))
    tested = run.test(model, loader(regression(16)), verbose=False)
    return observe(run, model, root, calls=calls, tested=tested,
                   summary=(run.num_sanity_val_steps, run.log_every_n_steps, len(run.callbacks),
                            len(run.loggers)))  # fmt: skip


@scenario
def barebones_refuses_a_logger(pl, root):
    try:  # Lightning raises a ValueError; ltrain's MisconfigurationException is one
        trainer(pl, root, barebones=True, logger=True)
    except ValueError as error:
        return {"refused": str(error)}
    return {"refused": None}


@scenario
def simple_profiler_files_per_stage(pl, root):
    profiler = pl.profilers.SimpleProfiler(dirpath=str(root / "perf"), filename="perf_logs")
    model = kit(pl).Regressor()
    run = trainer(pl, root, max_epochs=1, profiler=profiler)
    run.fit(model, loader(regression()), loader(regression(16)))
    run.validate(model, loader(regression(16)), verbose=False)
    reports = {p.name: p.read_text().splitlines()[0] for p in sorted((root / "perf").iterdir())}
    return {"reports": reports, "profiler": type(run.profiler).__name__}


# ---- issue 15: callbacks
def _prediction_writer(pl: Any, interval: str, seen: list) -> Any:
    def shapes(predictions: Any) -> Any:
        if isinstance(predictions, torch.Tensor):
            return list(predictions.shape)
        return [shapes(p) for p in predictions]

    class Writer(pl.callbacks.BasePredictionWriter):
        def write_on_batch_end(self, trainer, pl_module, prediction, batch_indices, batch,
                               batch_idx, dataloader_idx):  # fmt: skip
            seen.append(("batch", prediction.tolist(), batch_indices, batch_idx, dataloader_idx))

        def write_on_epoch_end(self, trainer, pl_module, predictions, batch_indices):
            seen.append(("epoch", shapes(predictions), batch_indices))

    return Writer(interval)


@scenario
def prediction_writer_calls_and_batch_indices(pl, root):
    seen: list = []
    model = kit(pl).Classifier()
    shuffled = loader(classification(12), 5, shuffle=True)
    two = [loader(classification(12), 5), loader(classification(7, seed=3), 4)]
    for interval in ("batch", "epoch", "batch_and_epoch"):
        for loaders in (shuffled, two):
            for keep in (True, False):
                run = trainer(pl, root, callbacks=[_prediction_writer(pl, interval, seen)])
                returned = run.predict(model, loaders, return_predictions=keep)
                seen.append(("returned", returned is None or len(returned)))
    return {"seen": seen}


def _swa_model(pl: Any, batch_norm: bool, scheduler: bool, rates: list) -> Any:
    class Averaged(kit(pl).Regressor):
        def __init__(self) -> None:
            super().__init__()
            self.norm = torch.nn.BatchNorm1d(4) if batch_norm else torch.nn.Identity()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return super().forward(self.norm(x))

        def on_train_epoch_start(self) -> None:
            rates.append(self.trainer.optimizers[0].param_groups[0]["lr"])

        def configure_optimizers(self) -> Any:
            optimizer = torch.optim.SGD(self.parameters(), lr=self.lr, momentum=0.9)
            if not scheduler:
                return optimizer
            return [optimizer], [torch.optim.lr_scheduler.StepLR(optimizer, 1, gamma=0.5)]

    return Averaged()


def _swa_run(pl: Any, root: Path, batch_norm: bool, scheduler: bool, **swa: Any) -> dict:
    rates: list = []
    model = _swa_model(pl, batch_norm, scheduler, rates)
    averaging = pl.callbacks.StochasticWeightAveraging(**swa)
    run, model = _fit(pl, root, model=model, max_epochs=5, callbacks=[averaging])
    seen = observe(run, model, root)
    seen.update(rates=rates, n_averaged=int(averaging.n_averaged), max_epochs=run.max_epochs)
    return seen


@scenario
def swa_from_a_fraction_with_a_scheduler(pl, root):
    return _swa_run(pl, root, False, True, swa_lrs=0.05, swa_epoch_start=0.6, annealing_epochs=2)


@scenario
def swa_linear_from_an_epoch_without_a_scheduler(pl, root):
    return _swa_run(pl, root, False, False, swa_lrs=[0.02], swa_epoch_start=2,
                    annealing_epochs=1, annealing_strategy="linear")  # fmt: skip


@scenario
def swa_with_batch_norm_recomputes_its_statistics(pl, root):
    seen = _swa_run(pl, root, True, True, swa_lrs=0.05, swa_epoch_start=3, annealing_epochs=3)
    return seen


@scenario
def swa_resumes_mid_averaging_exactly(pl, root):
    def fit(ckpt_path: Any, name: str) -> tuple:
        model = _swa_model(pl, True, True, [])
        averaging = pl.callbacks.StochasticWeightAveraging(swa_lrs=0.05, swa_epoch_start=2)
        every = pl.callbacks.ModelCheckpoint(dirpath=str(root / name), save_top_k=-1)
        run = trainer(pl, root, max_epochs=4, callbacks=[averaging, every],
                      logger=pl.loggers.CSVLogger(str(root), name=name))  # fmt: skip
        run.fit(model, loader(regression()), ckpt_path=ckpt_path)
        return model, run

    whole, _ = fit(None, "whole")
    middle = sorted((root / "whole").glob("epoch=2-*.ckpt"))[0]
    resumed, run = fit(str(middle), "resumed")
    return {
        "whole": dict(whole.state_dict()),
        "resumed": dict(resumed.state_dict()),
        "same": all(torch.equal(whole.state_dict()[k], v) for k, v in resumed.state_dict().items()),
        "global_step": run.global_step,
    }


def _averaging_fit(pl: Any, root: Path, averaging: Any, name: str, ckpt_path: Any = None) -> Any:
    model = _swa_model(pl, True, True, [])
    every = pl.callbacks.ModelCheckpoint(dirpath=str(root / name), save_top_k=-1)
    run = trainer(pl, root, max_epochs=3, callbacks=[averaging, every],
                  logger=pl.loggers.CSVLogger(str(root), name=name))  # fmt: skip
    run.fit(model, loader(regression()), loader(regression(32, seed=2)), ckpt_path=ckpt_path)
    return run, model


@scenario
def ema_weight_averaging_validates_and_ends_on_the_average(pl, root):
    ema = pl.callbacks.EMAWeightAveraging(decay=0.9, update_every_n_steps=2,
                                          update_starting_at_step=3)  # fmt: skip
    run, model = _averaging_fit(pl, root, ema, "run")
    stored = torch.load(run.checkpoint_callback.best_model_path, weights_only=False)
    seen = observe(run, model, root)
    seen.update(
        stored={k: stored[k] for k in ("state_dict", "current_model_state", "averaging_state")}
    )
    return seen


@scenario
def weight_averaging_resumes_from_its_checkpoint(pl, root):
    _averaging_fit(pl, root, pl.callbacks.WeightAveraging(), "whole")
    middle = sorted((root / "whole").glob("epoch=1-*.ckpt"))[0]
    run, model = _averaging_fit(pl, root, pl.callbacks.WeightAveraging(), "resumed", str(middle))
    return observe(run, model, root)


def _throughput_columns(root: Path, name: str) -> dict:
    import csv

    rows = list(csv.DictReader((root / name / "version_0" / "metrics.csv").open()))
    kept = ("step", "epoch", "batches", "samples", "lengths")
    return {
        "columns": sorted(rows[0]) if rows else [],
        "rows": [{k: v for k, v in row.items() if v and k.split("/")[-1] in kept} for row in rows],
    }


@scenario
def throughput_monitor_logs_lightnings_names(pl, root):
    monitor = pl.callbacks.ThroughputMonitor(batch_size_fn=lambda batch: batch[0].size(0),
                                             length_fn=lambda batch: batch[0].numel(),
                                             window_size=2)  # fmt: skip
    run = trainer(pl, root, max_epochs=2, callbacks=[monitor], log_every_n_steps=3,
                  logger=pl.loggers.CSVLogger(str(root), name="fit"))  # fmt: skip
    model = kit(pl).Regressor()
    run.fit(model, loader(regression(40)), loader(regression(24, seed=2)))
    run.test(model, loader(regression(16, seed=3)))
    seen = _throughput_columns(root, "fit")
    run = trainer(pl, root, callbacks=[monitor], log_every_n_steps=1,
                  logger=pl.loggers.CSVLogger(str(root), name="p"))  # fmt: skip
    run.predict(model, loader(regression(24, seed=4)))
    seen["predict"] = _throughput_columns(root, "p")
    return seen


@scenario
def device_stats_monitor_names_and_steps(pl, root):
    import csv
    import importlib.util

    if importlib.util.find_spec("psutil") is None:  # both frameworks need it for CPU stats
        return {"skipped": "psutil is not installed"}
    run = trainer(pl, root, max_epochs=1, log_every_n_steps=2,
                  callbacks=[pl.callbacks.DeviceStatsMonitor()])  # fmt: skip
    run.fit(kit(pl).Regressor(), loader(regression(40)), loader(regression(24, seed=2)))
    rows = list(csv.DictReader((root / "run" / "version_0" / "metrics.csv").open()))
    return {
        "columns": sorted(rows[0]),
        "rows": [sorted((k, r["step"]) for k, v in r.items() if v and "Device" in k) for r in rows],
    }


# ---- issue 15: rich and checkpoint options
def _checkpoint_files(root: Path, checkpoint: Any) -> dict:
    """Every .ckpt file: a link's target, or the global step a file holds; and the paths kept."""
    files = {}
    for path in sorted(root.rglob("*.ckpt")):
        name = str(path.relative_to(root))
        if path.is_symlink():
            files[name] = "-> " + str(Path(path.readlink()))
        else:
            files[name] = torch.load(path, weights_only=False)["global_step"]
    kept = {k: Path(getattr(checkpoint, k)).name for k in ("best_model_path", "last_model_path")}
    return {"files": files, **kept}


def _checkpointed_fit(pl: Any, root: Path, epochs: int, **options: Any) -> dict:
    checkpoint = pl.callbacks.ModelCheckpoint(**options)
    _fit(pl, root, val=loader(regression(16)), max_epochs=epochs, callbacks=[checkpoint])
    return _checkpoint_files(root, checkpoint)


@scenario
def checkpoint_train_time_interval_zero_saves_every_batch(pl, root):
    from datetime import timedelta

    return _checkpointed_fit(pl, root, 2, train_time_interval=timedelta(0), save_top_k=-1,
                             save_last=True)  # fmt: skip


@scenario
def checkpoint_train_time_interval_monitored_waits_for_validation(pl, root):
    from datetime import timedelta

    return _checkpointed_fit(pl, root, 3, train_time_interval=timedelta(0), save_top_k=2,
                             monitor="valid_loss", save_last=True)  # fmt: skip


@scenario
def checkpoint_train_time_interval_not_reached_writes_only_last(pl, root):
    from datetime import timedelta

    return _checkpointed_fit(pl, root, 2, train_time_interval=timedelta(hours=1),
                             save_last=True)  # fmt: skip


@scenario
def checkpoint_train_time_interval_with_a_slow_step(pl, root):
    """Each training step takes a second of a fake clock: a 2.5 s interval saves every third."""
    from datetime import timedelta

    clock = [0.0]

    class SlowStep(kit(pl).Regressor):
        def training_step(self, batch: Any, batch_idx: int) -> Any:
            clock[0] += 1.0
            return super().training_step(batch, batch_idx)

    monotonic, time.monotonic = time.monotonic, lambda: clock[0]
    try:
        checkpoint = pl.callbacks.ModelCheckpoint(train_time_interval=timedelta(seconds=2.5),
                                                  save_top_k=-1)  # fmt: skip
        _fit(pl, root, SlowStep(), val=loader(regression(16)), max_epochs=2,
             callbacks=[checkpoint])  # fmt: skip
    finally:
        time.monotonic = monotonic
    return _checkpoint_files(root, checkpoint)


@scenario
def checkpoint_train_time_interval_with_steps_is_refused(pl, root):
    from datetime import timedelta

    try:
        pl.callbacks.ModelCheckpoint(every_n_train_steps=2, train_time_interval=timedelta(0))
    except Exception as error:
        return {"error": f"{type(error).__name__}: {error}"}
    return {"error": None}


@scenario
def checkpoint_save_last_link_follows_the_latest_file(pl, root):
    return _checkpointed_fit(pl, root, 4, monitor="valid_loss", save_top_k=2, save_last="link")


@scenario
def checkpoint_save_last_link_every_second_epoch(pl, root):
    return _checkpointed_fit(pl, root, 3, every_n_epochs=2, save_top_k=-1, save_last="link")


@scenario
def checkpoint_save_last_link_without_top_k_is_a_file(pl, root):
    return _checkpointed_fit(pl, root, 2, save_top_k=0, save_last="link")


@scenario
def checkpoint_save_last_link_every_n_train_steps(pl, root):
    return _checkpointed_fit(pl, root, 2, every_n_train_steps=3, save_last="link")


@scenario
def rich_progress_bar_and_summary_are_the_trainers(pl, root):
    import importlib.util

    if importlib.util.find_spec("rich") is None:  # both frameworks need it
        return {"skipped": "rich is not installed"}
    bar = pl.callbacks.RichProgressBar(refresh_rate=2, leave=True)
    summary = pl.callbacks.RichModelSummary(max_depth=2)
    run, model = _fit(pl, root, val=loader(regression(16)), max_epochs=2,
                      callbacks=[bar, summary], enable_progress_bar=True,
                      enable_model_summary=True)  # fmt: skip
    return {
        "bar": type(run.progress_bar_callback).__name__,
        "same": run.progress_bar_callback is bar,
        "shown": sorted(bar.get_metrics(run, model)),
        "refresh_rate": (bar.refresh_rate, pl.callbacks.RichProgressBar().refresh_rate),
        "enabled": (bar.is_enabled, pl.callbacks.RichProgressBar(refresh_rate=0).is_disabled),
        "summaries": [type(c).__name__ for c in run.callbacks if "Summary" in type(c).__name__],
    }


@scenario
def checkpoint_every_n_train_steps_zero_saves_no_epochs(pl, root):
    return _checkpointed_fit(pl, root, 2, every_n_train_steps=0, save_last=True)


@scenario
def checkpoint_save_last_link_resumes_from_last(pl, root):
    folder = str(root / "ckpts")
    for epochs, resume in ((2, None), (3, "last")):
        checkpoint = pl.callbacks.ModelCheckpoint(dirpath=folder, save_last="link")
        run = trainer(pl, root, max_epochs=epochs, callbacks=[checkpoint])
        run.fit(kit(pl).Regressor(), loader(regression()), ckpt_path=resume)
    return {**_checkpoint_files(root, checkpoint), "step": run.global_step}


# ---- issue 15: compile and time
def _compiled_fit(pl: Any, root: Path, model: Any, fitted: Any) -> dict:
    run = trainer(pl, root, max_epochs=2)
    run.fit(fitted, loader(regression()), loader(regression(16, seed=2)))
    seen = observe(run, model, root)
    checkpoint = torch.load(run.checkpoint_callback.best_model_path, weights_only=False)
    seen["checkpoint_weights"] = dict(checkpoint["state_dict"])


# ---- issue 15: finders
def _sized_model(pl: Any, limit: int) -> Any:
    """Batch size in `batch_size`; a fake CUDA out-of-memory error above `limit` (Lightning's
    own tests fake it so); records the size of every training batch."""

    class SizedRegressor(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.layer = torch.nn.Linear(4, 1)
            self.batch_size = 2
            self.seen: list[int] = []

        def train_dataloader(self) -> Any:
            return loader(regression(200), batch_size=self.batch_size)

        def training_step(self, batch: Any, batch_idx: int) -> Any:
            self.seen.append(len(batch[0]))
            if len(batch[0]) > limit:
                raise RuntimeError("CUDA error: out of memory")
            return F.mse_loss(self.layer(batch[0]), batch[1])

        def configure_optimizers(self) -> Any:
            return torch.optim.SGD(self.parameters(), lr=0.05)

    return SizedRegressor()


@scenario
def scale_batch_size_power_and_binsearch(pl, root):
    seen = {}
    for mode, options in (("power", {}), ("binsearch", {}), ("power", {"max_trials": 3})):
        model = _sized_model(pl, limit=40)
        before = {k: v.clone() for k, v in model.state_dict().items()}
        run = trainer(pl, root, logger=False, enable_checkpointing=False, max_epochs=1)
        found = pl.tuner.Tuner(run).scale_batch_size(model, mode=mode, **options)
        seen[f"{mode}{options}"] = {
            "found": found,
            "attribute": model.batch_size,
            "tried": model.seen,
            "weights_unchanged": all(
                torch.equal(before[k], v) for k, v in model.state_dict().items()
            ),
            "status": run.state.status.value,
        }
    return seen


@scenario
def compiled_module_trains_and_saves_plain_keys(pl, root):
    model = kit(pl).Regressor()
    # the eager backend: inductor's fused kernels may round a loss differently where the two
    # frameworks' graphs break at different places (self.log); the weights agree either way
    return _compiled_fit(pl, root, model, torch.compile(model, backend="eager"))


@scenario
def submodule_compiled_in_configure_model(pl, root):
    class Compiles(kit(pl).Regressor):
        def configure_model(self) -> None:
            self.layer = torch.compile(self.layer)

    model = Compiles()
    return _compiled_fit(pl, root, model, model)


def _validations_by_time(pl: Any, root: Path, interval: Any, sleep: float) -> dict:
    class Sleeps(kit(pl).Regressor):
        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            time.sleep(sleep)
            return super().training_step(batch, batch_idx)

        def on_validation_start(self) -> None:
            self.calls.append(f"validation at step {self.trainer.global_step}")

    model = Sleeps()
    run = trainer(pl, root, max_epochs=2, val_check_interval=interval)
    run.fit(model, loader(regression(32)), loader(regression(16, seed=2)))
    return observe(run, model, root)


@scenario
def val_check_interval_longer_than_the_fit(pl, root):
    # no validation after the sanity check (not even at an epoch's end), so no checkpoint
    return _validations_by_time(pl, root, "00:01:00:00", sleep=0.0)


@scenario
def val_check_interval_every_two_sleeping_steps(pl, root):
    # steps of 0.3 s, 0.5 s between validations: due after every second step, whatever the load
    return _validations_by_time(pl, root, {"seconds": 0.5}, sleep=0.3)


def batch_size_finder_callback_then_fit(pl, root):
    seen = {}
    for mode in ("power", "binsearch"):
        pl.seed_everything(0)  # Lightning's search leaves the generators moved, ltrain's does not
        model = _sized_model(pl, limit=40)
        finder = pl.callbacks.BatchSizeFinder(mode=mode, max_trials=10)
        run = trainer(
            pl, root, logger=False, enable_checkpointing=False, max_epochs=2, callbacks=[finder]
        )
        run.fit(model)
        seen[mode] = {
            "optimal": finder.optimal_batch_size,
            "tried_then_fit": model.seen,
            "weights": model.state_dict(),
            "global_step": run.global_step,
        }
    return seen


@scenario
def learning_rate_finder_callback_then_fit(pl, root):
    model = kit(pl).Regressor(lr=0.001)
    finder = pl.callbacks.LearningRateFinder(min_lr=1e-4, max_lr=0.5, num_training_steps=18)
    run = trainer(
        pl, root, logger=False, enable_checkpointing=False, max_epochs=2, callbacks=[finder]
    )
    run.fit(model, loader(regression(160)))
    return {
        "results": finder.optimal_lr.results,
        "suggestion": finder.optimal_lr.suggestion(),
        "lr": model.lr,
        "optimizer_lr": run.optimizers[0].param_groups[0]["lr"],
        "weights": model.state_dict(),
        "global_step": run.global_step,
    }
