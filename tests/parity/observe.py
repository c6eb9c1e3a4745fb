"""What a user sees after a run, gathered the same way under Lightning and under ltrain.

Scenarios (scenarios.py) take the framework module as `pl` (`lightning.pytorch` or `ltrain`) and
build their models from the classes here, made for that framework by `kit(pl)`. `observe` turns
what a run left behind into plain data (numbers, strings, lists, dicts, CPU tensors) that
`torch.save` can store and `torch.load(weights_only=True)` read back, so the two processes'
results can be compared in the test process.
"""

from __future__ import annotations

import csv
import enum
import functools
import math
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
import yaml
from torch.nn import functional as F
from torch.utils.data import DataLoader, Dataset, TensorDataset

# hooks Lightning calls on a LightningModule (its ModelHooks, DataHooks and CheckpointHooks, and
# the methods the loop calls around the optimizer), recorded in the order they run
MODULE_HOOKS = (
    "prepare_data", "setup", "teardown", "configure_model", "configure_callbacks",
    "configure_optimizers", "configure_gradient_clipping", "on_fit_start", "on_fit_end",
    "on_train_start", "on_train_end", "on_validation_start", "on_validation_end",
    "on_test_start", "on_test_end", "on_predict_start", "on_predict_end",
    "on_train_epoch_start", "on_train_epoch_end", "on_validation_epoch_start",
    "on_validation_epoch_end", "on_test_epoch_start", "on_test_epoch_end",
    "on_predict_epoch_start", "on_predict_epoch_end", "on_train_batch_start",
    "on_train_batch_end", "on_validation_batch_start", "on_validation_batch_end",
    "on_test_batch_start", "on_test_batch_end", "on_predict_batch_start",
    "on_predict_batch_end", "on_validation_model_eval", "on_validation_model_train",
    "on_validation_model_zero_grad", "on_test_model_eval", "on_test_model_train",
    "on_predict_model_eval", "on_before_batch_transfer", "transfer_batch_to_device",
    "on_after_batch_transfer", "on_before_backward", "backward", "on_after_backward",
    "on_before_optimizer_step", "optimizer_step", "on_before_zero_grad", "optimizer_zero_grad",
    "lr_scheduler_step", "on_save_checkpoint", "on_load_checkpoint",
)  # fmt: skip

CALLBACK_HOOKS = (
    "setup", "teardown", "on_fit_start", "on_fit_end", "on_sanity_check_start",
    "on_sanity_check_end", "on_train_start", "on_train_end", "on_validation_start",
    "on_validation_end", "on_test_start", "on_test_end", "on_predict_start", "on_predict_end",
    "on_train_epoch_start", "on_train_epoch_end", "on_validation_epoch_start",
    "on_validation_epoch_end", "on_test_epoch_start", "on_test_epoch_end",
    "on_predict_epoch_start", "on_predict_epoch_end", "on_train_batch_start",
    "on_train_batch_end", "on_validation_batch_start", "on_validation_batch_end",
    "on_test_batch_start", "on_test_batch_end", "on_predict_batch_start",
    "on_predict_batch_end", "on_before_backward", "on_after_backward",
    "on_before_optimizer_step", "on_before_zero_grad", "on_save_checkpoint",
    "on_load_checkpoint", "on_exception",
)  # fmt: skip


def _describe(name: str, args: tuple, kwargs: dict) -> str:
    """A hook call as text: its name and the arguments that say where the loop is (the stage,
    batch and dataloader indices), whether they came by position or by keyword."""
    values = [*args, *(kwargs[k] for k in sorted(kwargs))]
    shown = [
        str(v.value if isinstance(v, enum.Enum) else v)
        for v in values
        if isinstance(v, (int, str)) and not isinstance(v, bool)
    ]
    return f"{name}({', '.join(shown)})" if shown else name


def recording_class(base: type, hooks: tuple[str, ...], log_attribute: str = "calls") -> type:
    """A subclass of `base` whose instances append each hook call to `self.<log_attribute>`.

    Hooks the subclass of `base` already defines are wrapped around, so the user's code runs.
    """

    def make(name: str) -> Any:
        def hook(self: Any, *args: Any, **kwargs: Any) -> Any:
            getattr(self, log_attribute).append(_describe(name, args, kwargs))
            return getattr(super(recorder, self), name)(*args, **kwargs)

        hook.__name__ = name
        return hook

    namespace = {name: make(name) for name in hooks if hasattr(base, name)}
    recorder = type(f"Recording{base.__name__}", (base,), namespace)
    return recorder


# ---------------------------------------------------------------------- data
def regression(samples: int = 64, features: int = 4, seed: int = 0) -> TensorDataset:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(samples, features, generator=generator)
    return TensorDataset(
        x, x.sum(dim=1, keepdim=True) + 0.1 * torch.randn(samples, 1, generator=generator)
    )


def classification(
    samples: int = 96, features: int = 8, classes: int = 3, seed: int = 1
) -> TensorDataset:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(samples, features, generator=generator)
    return TensorDataset(x, torch.randint(0, classes, (samples,), generator=generator))


def loader(
    dataset: Dataset, batch_size: int = 8, shuffle: bool = False, **kwargs: Any
) -> DataLoader:
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, **kwargs)


# ---------------------------------------------------------------------- models
@functools.cache
def kit(pl: Any) -> SimpleNamespace:
    """The scenario models, made once per framework."""

    class Regressor(pl.LightningModule):
        """A linear layer with dropout (so the generators matter); logs per step and epoch."""

        def __init__(self, lr: float = 0.1, features: int = 4) -> None:
            super().__init__()
            self.layer = torch.nn.Linear(features, 1)
            self.dropout = torch.nn.Dropout(0.1)
            self.lr = lr
            self.calls: list[str] = []

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.layer(self.dropout(x))

        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            x, y = batch
            loss = F.mse_loss(self(x), y)
            self.log("train_loss", loss, on_step=True, on_epoch=True, prog_bar=True)
            return loss

        def validation_step(self, batch: Any, batch_idx: int) -> None:
            x, y = batch
            self.log("valid_loss", F.mse_loss(self(x), y), prog_bar=True)

        def test_step(self, batch: Any, batch_idx: int) -> None:
            x, y = batch
            self.log("test_loss", F.mse_loss(self(x), y))

        def predict_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> Any:
            return self(batch[0])

        def configure_optimizers(self) -> Any:
            return torch.optim.SGD(self.parameters(), lr=self.lr)

    class Classifier(pl.LightningModule):
        """A two-layer classifier; accuracy by hand (no torchmetrics unless a scenario adds it)."""

        def __init__(self, lr: float = 0.05, hidden: int = 16) -> None:
            super().__init__()
            self.save_hyperparameters()
            self.net = torch.nn.Sequential(
                torch.nn.Linear(8, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, 3)
            )
            self.calls: list[str] = []

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.net(x)

        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            x, y = batch
            logits = self(x)
            loss = F.cross_entropy(logits, y)
            self.log("train_loss", loss)
            self.log("train_acc", (logits.argmax(1) == y).float().mean(), on_epoch=True)
            return loss

        def validation_step(self, batch: Any, batch_idx: int) -> None:
            x, y = batch
            logits = self(x)
            self.log("val_loss", F.cross_entropy(logits, y))
            self.log("val_acc", (logits.argmax(1) == y).float().mean(), prog_bar=True)

        def test_step(self, batch: Any, batch_idx: int) -> None:
            x, y = batch
            self.log("test_acc", (self(x).argmax(1) == y).float().mean())

        def predict_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> Any:
            return self(batch[0]).argmax(1)

        def configure_optimizers(self) -> Any:
            return torch.optim.Adam(self.parameters(), lr=self.hparams.lr)

    class HookLog(pl.Callback):
        def __init__(self) -> None:
            self.calls: list[str] = []

    return SimpleNamespace(
        Regressor=Regressor,
        Classifier=Classifier,
        RecordingRegressor=recording_class(Regressor, MODULE_HOOKS),
        RecordingCallback=recording_class(HookLog, CALLBACK_HOOKS),
    )


def trainer(pl: Any, root: Path, **kwargs: Any) -> Any:
    """A quiet CPU Trainer writing under `root` with a CSVLogger (as a user's script would)."""
    options: dict[str, Any] = {
        "default_root_dir": str(root),
        "accelerator": "cpu",
        "devices": 1,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "logger": pl.loggers.CSVLogger(str(root), name="run"),
        "deterministic": True,
    }
    options.update(kwargs)
    return pl.Trainer(**options)


# ---------------------------------------------------------------------- observations
def _plain(value: Any) -> Any:
    """`value` as plain data: tensors become CPU tensors (0-d ones floats), mappings dicts."""
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu()
        return value.item() if value.dim() == 0 else value
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, float) and math.isnan(value):
        return "nan"
    if isinstance(value, (int, float, str, bool)) or value is None:
        return value
    return f"<{type(value).__name__}>"


def _relative(path: Any, root: Path) -> str | None:
    if not path:
        return None
    try:
        return str(Path(path).resolve().relative_to(root.resolve()))
    except ValueError:
        return str(path)


def read_csv(path: Path) -> dict[str, Any]:
    with path.open(newline="") as handle:
        rows = list(csv.reader(handle))
    header, body = (rows[0], rows[1:]) if rows else ([], [])
    return {"columns": header, "rows": [[_number(cell) for cell in row] for row in body]}


def _number(cell: str) -> Any:
    if cell == "":
        return None
    try:
        value = float(cell)
    except ValueError:
        return cell
    return "nan" if math.isnan(value) else value


def observe(
    trainer: Any = None,
    module: Any = None,
    root: Path | None = None,
    callbacks: tuple[Any, ...] = (),
    **returns: Any,
) -> dict[str, Any]:
    """Everything a user can see after a run, as plain data."""
    seen: dict[str, Any] = {}
    if root is not None:
        seen["metrics"] = {
            _relative(p, root): read_csv(p) for p in sorted(root.rglob("metrics.csv"))
        }
        seen["hparams"] = {
            _relative(p, root): yaml.safe_load(p.read_text())
            for p in sorted(root.rglob("hparams.yaml"))
        }
        seen["checkpoints"] = sorted(_relative(p, root) for p in root.rglob("*.ckpt"))
    if trainer is not None:
        for name in ("callback_metrics", "logged_metrics", "progress_bar_metrics"):
            seen[name] = _plain(dict(getattr(trainer, name)))
        seen["current_epoch"] = trainer.current_epoch
        seen["global_step"] = trainer.global_step
        seen["should_stop"] = bool(trainer.should_stop)
        checkpoint = getattr(trainer, "checkpoint_callback", None)
        if checkpoint is not None and root is not None:
            seen["best_model_path"] = _relative(checkpoint.best_model_path, root)
            seen["best_model_score"] = _plain(checkpoint.best_model_score)
            seen["best_k_models"] = {
                _relative(k, root): _plain(v) for k, v in checkpoint.best_k_models.items()
            }
            seen["last_model_path"] = _relative(checkpoint.last_model_path, root)
    if module is not None:
        seen["weights"] = {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}
        if getattr(module, "calls", None):
            seen["module_hooks"] = list(module.calls)
    for index, callback in enumerate(callbacks):
        seen[f"callback_{index}_hooks"] = list(callback.calls)
    for name, value in returns.items():
        seen[name] = _plain(value)
    return seen
