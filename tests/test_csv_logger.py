"""What `metrics.csv` and the version folder look like after a run, row by row, as Lightning writes them.

Every test reads the file the way users' analysis code does (pandas for columns and rows, the raw
CSV text where the exact float repr matters) and compares with the values the module logged.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import torch
import yaml
from boring import BoringModel, boring_loader, quiet_trainer
from torch.nn import functional as F

import ltrain as pl
from ltrain.loggers import CSVLogger

# BoringModel has a validation_step; most runs here train without validation data
pytestmark = pytest.mark.filterwarnings("ignore:You defined a validation_step")

# ---------------------------------------------------------------------- helpers


def fit(
    tmp_path: Path, model: pl.LightningModule, train_batches: int, **trainer_kwargs: Any
) -> pl.Trainer:
    """Fit `model` for 2 epochs (unless told) on `train_batches` batches of 4 samples, no val."""
    options = {"max_epochs": 2, "enable_checkpointing": False}
    options.update(trainer_kwargs)
    trainer = quiet_trainer(tmp_path, **options)
    trainer.fit(model, boring_loader(samples=4 * train_batches, batch_size=4))
    return trainer


def metrics_path(trainer: pl.Trainer) -> Path:
    return Path(trainer.logger.log_dir) / "metrics.csv"


def read_metrics(trainer: pl.Trainer) -> pd.DataFrame:
    return pd.read_csv(metrics_path(trainer))


def raw_rows(path: Path) -> list[dict[str, str]]:
    """The rows as the text in the file, so float reprs are compared exactly."""
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def written(value: torch.Tensor | float) -> str:
    """How a logged value must appear in metrics.csv: the repr of the Python float."""
    return repr(float(value))


class StepLogger(BoringModel):
    """Logs `train_loss` with the given options and records every value it logged."""

    def __init__(self, **log_options: Any) -> None:
        super().__init__()
        self.log_options = log_options
        self.losses: list[torch.Tensor] = []

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = F.mse_loss(self(x), y)
        self.log("train_loss", loss, **self.log_options)
        self.losses.append(loss.detach().clone())
        return loss


class Silent(BoringModel):
    """Trains and validates without logging anything."""

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        return F.mse_loss(self(x), y)

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        pass


# ---------------------------------------------------------------------- step rows


def test_step_rows_every_log_every_n_steps_across_epochs(tmp_path):
    model = StepLogger()
    trainer = fit(tmp_path, model, train_batches=10, log_every_n_steps=3)

    frame = read_metrics(trainer)
    assert list(frame.columns) == ["epoch", "step", "train_loss"]
    # counted over the whole fit: (s + 1) % 3 == 0, not restarting at each epoch
    assert frame["step"].tolist() == [2, 5, 8, 11, 14, 17]
    assert frame["epoch"].tolist() == [0, 0, 0, 1, 1, 1]
    rows = raw_rows(metrics_path(trainer))
    assert [row["train_loss"] for row in rows] == [
        written(model.losses[s]) for s in (2, 5, 8, 11, 14, 17)
    ]


def test_step_rows_with_47_batches_and_interval_10_fall_on_steps_9_19_and_so_on(tmp_path):
    trainer = fit(tmp_path, StepLogger(), train_batches=47, log_every_n_steps=10)

    frame = read_metrics(trainer)
    assert frame["step"].tolist() == [9, 19, 29, 39, 49, 59, 69, 79, 89]
    assert frame["epoch"].tolist() == [0, 0, 0, 0, 1, 1, 1, 1, 1]


def test_step_rows_with_default_interval_50_span_epochs_of_47_batches(tmp_path):
    trainer = fit(tmp_path, StepLogger(), train_batches=47, max_epochs=3)

    assert trainer.global_step == 141
    frame = read_metrics(trainer)
    assert frame["step"].tolist() == [49, 99]
    assert frame["epoch"].tolist() == [1, 2]


def test_step_row_step_is_global_step_minus_one_when_written(tmp_path):
    seen: list[tuple[int, int]] = []

    class WatchRows(pl.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            seen.append((trainer.global_step, batch_idx))

    trainer = fit(
        tmp_path, StepLogger(), train_batches=10, log_every_n_steps=4, callbacks=[WatchRows()]
    )

    global_steps_at_row = [g for g, _ in seen if g % 4 == 0]
    assert read_metrics(trainer)["step"].tolist() == [g - 1 for g in global_steps_at_row]


# ---------------------------------------------------------------------- epoch rows


def test_epoch_row_per_epoch_at_last_batch_index_with_only_epoch_keys(tmp_path):
    model = StepLogger(on_step=False, on_epoch=True)
    trainer = fit(tmp_path, model, train_batches=7, log_every_n_steps=2)

    frame = read_metrics(trainer)
    assert list(frame.columns) == ["epoch", "step", "train_loss"]
    assert frame["step"].tolist() == [6, 13]
    assert frame["epoch"].tolist() == [0, 1]


def test_epoch_row_is_separate_from_a_step_row_at_the_same_step(tmp_path):
    trainer = fit(
        tmp_path, StepLogger(on_step=True, on_epoch=True), train_batches=10, log_every_n_steps=10
    )

    frame = read_metrics(trainer)
    assert frame["step"].tolist() == [9, 9, 19, 19]
    assert frame["epoch"].tolist() == [0, 0, 1, 1]
    step_rows, epoch_rows = frame.iloc[[0, 2]], frame.iloc[[1, 3]]
    assert step_rows["train_loss_step"].notna().all()
    assert step_rows["train_loss_epoch"].isna().all()
    assert epoch_rows["train_loss_epoch"].notna().all()
    assert epoch_rows["train_loss_step"].isna().all()


def test_epoch_row_value_is_the_mean_of_the_epoch(tmp_path):
    model = StepLogger(on_step=False, on_epoch=True)
    trainer = fit(tmp_path, model, train_batches=5)

    rows = raw_rows(metrics_path(trainer))
    for epoch, row in enumerate(rows):
        losses = model.losses[5 * epoch : 5 * epoch + 5]
        total = losses[0] * 4
        for loss in losses[1:]:
            total = total + loss * 4
        assert row["train_loss"] == written(total / 20)


# ---------------------------------------------------------------------- columns and cells


def test_on_step_and_on_epoch_write_step_and_epoch_columns_never_the_bare_name(tmp_path):
    trainer = fit(
        tmp_path, StepLogger(on_step=True, on_epoch=True), train_batches=4, log_every_n_steps=2
    )

    frame = read_metrics(trainer)
    assert list(frame.columns) == ["epoch", "step", "train_loss_epoch", "train_loss_step"]
    assert "train_loss" not in frame.columns


def test_only_on_step_or_only_on_epoch_writes_the_bare_name(tmp_path):
    for options in ({"on_step": True, "on_epoch": False}, {"on_step": False, "on_epoch": True}):
        root = tmp_path / str(options["on_step"])
        trainer = fit(root, StepLogger(**options), train_batches=4, log_every_n_steps=2)
        assert list(read_metrics(trainer).columns) == ["epoch", "step", "train_loss"]


def test_columns_sorted_with_epoch_and_step_and_missing_keys_are_empty_cells(tmp_path):
    class ManyKeys(BoringModel):
        def training_step(self, batch, batch_idx):
            x, y = batch
            loss = F.mse_loss(self(x), y)
            self.log("zeta", loss)
            self.log("alpha", loss, on_step=False, on_epoch=True)
            self.log("gamma", loss, on_step=True, on_epoch=True)
            return loss

    trainer = fit(tmp_path, ManyKeys(), train_batches=2, log_every_n_steps=2, max_epochs=1)

    lines = metrics_path(trainer).read_text().splitlines()
    assert lines[0] == "alpha,epoch,gamma_epoch,gamma_step,step,zeta"
    assert len(lines) == 3
    step_cells, epoch_cells = lines[1].split(","), lines[2].split(",")
    # step row: alpha and gamma_epoch empty; epoch row: gamma_step and zeta empty
    assert [c == "" for c in step_cells] == [True, False, True, False, False, False]
    assert [c == "" for c in epoch_cells] == [False, False, False, True, False, True]
    assert step_cells[1] == "0" and step_cells[4] == "1"
    assert epoch_cells[1] == "0" and epoch_cells[4] == "1"


def test_values_are_python_float_reprs_and_epoch_and_step_integers(tmp_path):
    model = StepLogger()
    trainer = fit(tmp_path, model, train_batches=3, log_every_n_steps=1, max_epochs=1)

    rows = raw_rows(metrics_path(trainer))
    assert [row["train_loss"] for row in rows] == [written(loss) for loss in model.losses]
    assert [row["step"] for row in rows] == ["0", "1", "2"]
    assert [row["epoch"] for row in rows] == ["0", "0", "0"]
    frame = read_metrics(trainer)
    assert frame["epoch"].dtype.kind == "i" and frame["step"].dtype.kind == "i"


def test_new_column_mid_run_rewrites_header_and_keeps_earlier_rows(tmp_path):
    class LateKey(StepLogger):
        def training_step(self, batch, batch_idx):
            loss = super().training_step(batch, batch_idx)
            if self.current_epoch == 1:
                self.log("extra", loss * 2)
            return loss

    model = LateKey()
    logger = CSVLogger(tmp_path)  # alone in its folder (the default adds TensorBoard's events)
    trainer = fit(tmp_path, model, train_batches=3, log_every_n_steps=1, logger=logger)

    rows = raw_rows(metrics_path(trainer))
    assert list(rows[0]) == ["epoch", "extra", "step", "train_loss"]
    assert [row["step"] for row in rows] == ["0", "1", "2", "3", "4", "5"]
    assert [row["train_loss"] for row in rows] == [written(loss) for loss in model.losses]
    assert [row["extra"] for row in rows[:3]] == ["", "", ""]
    assert [row["extra"] for row in rows[3:]] == [written(loss * 2) for loss in model.losses[3:]]
    assert sorted(os.listdir(trainer.logger.log_dir)) == ["metrics.csv", "run.json"]


def test_logger_rewrite_on_new_key_keeps_rows_and_leaves_no_temp_file(tmp_path):
    logger = CSVLogger(tmp_path, name="direct")
    logger.log_metrics({"b": 1.5, "epoch": 0}, step=0)
    logger.log_metrics({"a": 0.25, "epoch": 0}, step=1)
    logger.log_metrics({"b": 2.5, "epoch": 1}, step=2)
    logger.finalize("success")

    assert Path(logger.metrics_file_path).read_text().splitlines() == [
        "a,b,epoch,step",
        ",1.5,0,0",
        "0.25,,0,1",
        ",2.5,1,2",
    ]
    assert os.listdir(logger.log_dir) == ["metrics.csv"]


def test_logger_prefix_joins_with_a_dash(tmp_path):
    logger = CSVLogger(tmp_path, name="prefixed", prefix="train")
    logger.log_metrics({"loss": 0.5, "epoch": 0}, step=3)
    logger.finalize("success")

    frame = pd.read_csv(logger.metrics_file_path)
    assert list(frame.columns) == ["step", "train-epoch", "train-loss"]


# ---------------------------------------------------------------------- validation rows


def test_validation_row_per_run_before_the_training_epoch_row(tmp_path):
    model = StepLogger(on_step=True, on_epoch=True)
    trainer = quiet_trainer(tmp_path, max_epochs=2, enable_checkpointing=False, log_every_n_steps=2)
    trainer.fit(model, boring_loader(samples=20, batch_size=4), boring_loader(16, batch_size=8))

    frame = read_metrics(trainer)
    assert list(frame.columns) == [
        "epoch",
        "step",
        "train_loss_epoch",
        "train_loss_step",
        "valid_loss",
    ]
    kinds = [
        "valid" if pd.notna(r.valid_loss) else "epoch" if pd.notna(r.train_loss_epoch) else "step"
        for r in frame.itertuples()
    ]
    # 5 batches per epoch: the step row of step 9 comes first, then validation, then the epoch
    assert kinds == ["step", "step", "valid", "epoch", "step", "step", "step", "valid", "epoch"]
    assert frame["step"].tolist() == [1, 3, 4, 4, 5, 7, 9, 9, 9]
    assert frame["epoch"].tolist() == [0, 0, 0, 0, 1, 1, 1, 1, 1]


def test_sanity_check_writes_no_row_and_leaves_no_callback_metrics(tmp_path):
    seen: dict[str, Any] = {}

    class AtTrainStart(pl.Callback):
        def on_train_start(self, trainer, pl_module):
            seen["callback_metrics"] = dict(trainer.callback_metrics)
            seen["file_exists"] = metrics_path(trainer).exists()

    trainer = quiet_trainer(
        tmp_path, max_epochs=1, enable_checkpointing=False, callbacks=[AtTrainStart()]
    )
    trainer.fit(BoringModel(), boring_loader(samples=8), boring_loader(samples=32))

    assert seen == {"callback_metrics": {}, "file_exists": False}
    frame = read_metrics(trainer)
    assert frame["valid_loss"].notna().sum() == 1


def test_val_check_interval_half_validates_at_steps_22_45_69_92(tmp_path):
    trainer = quiet_trainer(
        tmp_path,
        max_epochs=2,
        enable_checkpointing=False,
        val_check_interval=0.5,
        num_sanity_val_steps=0,
    )
    trainer.fit(BoringModel(), boring_loader(samples=47 * 2, batch_size=2), boring_loader(8))

    frame = read_metrics(trainer)
    validation = frame[frame["valid_loss"].notna()]
    assert validation["step"].tolist() == [22, 45, 69, 92]
    assert validation["epoch"].tolist() == [0, 0, 1, 1]


def test_validate_and_test_after_fit_append_to_the_same_metrics_file(tmp_path):
    trainer = fit(tmp_path, BoringModel(), train_batches=5, log_every_n_steps=5)
    before = len(read_metrics(trainer))

    trainer.validate(dataloaders=boring_loader(16), verbose=False)
    trainer.test(dataloaders=boring_loader(16), verbose=False)

    assert os.listdir(tmp_path / "lightning_logs") == ["version_0"]
    frame = read_metrics(trainer)
    assert len(frame) == before + 2
    validate_row, test_row = frame.iloc[-2], frame.iloc[-1]
    assert pd.notna(validate_row["valid_loss"]) and pd.isna(validate_row["test_loss"])
    assert pd.notna(test_row["test_loss"]) and pd.isna(test_row["valid_loss"])
    assert trainer.current_epoch == 2 and trainer.global_step == 10
    assert frame["epoch"].tolist()[-2:] == [2, 2]
    assert frame["step"].tolist()[-2:] == [10, 10]


# ---------------------------------------------------------------------- files and folders


def test_no_logged_value_means_no_metrics_file(tmp_path):
    trainer = fit(tmp_path, Silent(), train_batches=3, log_every_n_steps=1)
    trainer.validate(dataloaders=boring_loader(8), verbose=False)

    assert not metrics_path(trainer).exists()


def test_first_version_is_zero(tmp_path):
    logger = CSVLogger(tmp_path, name="run")

    assert logger.version == 0
    assert Path(logger.log_dir) == tmp_path / "run" / "version_0"


def test_version_is_one_past_the_largest_existing_even_with_gaps(tmp_path):
    (tmp_path / "run" / "version_0").mkdir(parents=True)
    (tmp_path / "run" / "version_5").mkdir()
    (tmp_path / "run" / "version_9").write_text("a file, not a version folder")

    logger = CSVLogger(tmp_path, name="run")

    assert logger.version == 6
    assert Path(logger.log_dir) == tmp_path / "run" / "version_6"
    assert CSVLogger(tmp_path, name="run").version == 7


def test_each_fit_with_a_default_logger_gets_the_next_version(tmp_path):
    for _ in range(2):
        fit(tmp_path, BoringModel(), train_batches=2, log_every_n_steps=1, max_epochs=1)

    assert sorted(os.listdir(tmp_path / "lightning_logs")) == ["version_0", "version_1"]


def test_explicit_version_reuses_its_folder(tmp_path):
    first = CSVLogger(tmp_path, name="run", version=3)
    first.log_metrics({"loss": 1.0, "epoch": 0}, step=0)
    first.finalize("success")

    again = CSVLogger(tmp_path, name="run", version=3)
    again.log_metrics({"loss": 2.0, "epoch": 0}, step=1)
    again.finalize("success")
    named = CSVLogger(tmp_path, name="run", version="baseline")

    assert again.log_dir == first.log_dir == str(tmp_path / "run" / "version_3")
    assert pd.read_csv(again.metrics_file_path)["loss"].tolist()[-1] == 2.0
    assert named.log_dir == str(tmp_path / "run" / "baseline")
    assert sorted(os.listdir(tmp_path / "run")) == ["baseline", "version_3"]


def test_rows_are_on_disk_while_training_runs(tmp_path):
    rows_seen: list[int] = []

    class ReadFileMidRun(pl.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            path = metrics_path(trainer)
            rows_seen.append(len(raw_rows(path)) if path.exists() else 0)

    fit(tmp_path, BoringModel(), train_batches=4, log_every_n_steps=1, callbacks=[ReadFileMidRun()])

    # before batch k of the whole fit, the rows of steps 0 .. k-1 are already in the file
    assert rows_seen == [0, 1, 2, 3, 4, 5, 6, 7]


def test_csv_logger_writes_hparams_yaml_only_after_save_hyperparameters(tmp_path):
    trainer = fit(
        tmp_path, BoringModel(), train_batches=2, max_epochs=1, logger=CSVLogger(tmp_path)
    )

    assert not (Path(trainer.logger.log_dir) / "hparams.yaml").exists()


def test_hparams_yaml_holds_init_args_with_sorted_keys(tmp_path):
    class WithHparams(BoringModel):
        def __init__(self, lr: float = 0.05, features: int = 4, name: str = "boring") -> None:
            super().__init__(features=features, lr=lr)
            self.save_hyperparameters()

    trainer = fit(
        tmp_path, WithHparams(lr=0.01), train_batches=2, log_every_n_steps=1, max_epochs=1
    )

    text = (Path(trainer.logger.log_dir) / "hparams.yaml").read_text()
    assert yaml.safe_load(text) == {"features": 4, "lr": 0.01, "name": "boring"}
    assert [line.split(":")[0] for line in text.splitlines()] == ["features", "lr", "name"]


def test_hparams_yaml_is_written_at_the_start_of_validate_test_and_predict_runs_too(tmp_path):
    class WithHparams(BoringModel):
        def __init__(self, lr: float = 0.05) -> None:
            super().__init__(lr=lr)
            self.save_hyperparameters()

    for number, run in enumerate(("validate", "test", "predict")):
        logger = CSVLogger(tmp_path, name=run)
        trainer = quiet_trainer(tmp_path, logger=logger)
        getattr(trainer, run)(WithHparams(lr=0.01 * (number + 1)), boring_loader(8))

        hparams = yaml.safe_load((Path(logger.log_dir) / "hparams.yaml").read_text())
        assert hparams == {"lr": 0.01 * (number + 1)}


def test_save_hyperparameters_without_arguments_writes_an_empty_hparams_yaml(tmp_path):
    class NoArguments(BoringModel):
        def __init__(self) -> None:
            super().__init__()
            self.save_hyperparameters()

    trainer = fit(
        tmp_path, NoArguments(), train_batches=2, max_epochs=1, logger=CSVLogger(tmp_path)
    )

    assert (Path(trainer.logger.log_dir) / "hparams.yaml").read_text() == "{}\n"


def test_save_hyperparameters_with_logger_false_keeps_them_out_of_hparams_yaml(tmp_path):
    class Unlogged(BoringModel):
        def __init__(self, lr: float = 0.05) -> None:
            super().__init__(lr=lr)
            self.save_hyperparameters(logger=False)

    trainer = fit(tmp_path, Unlogged(), train_batches=2, max_epochs=1, logger=CSVLogger(tmp_path))

    assert not (Path(trainer.logger.log_dir) / "hparams.yaml").exists()


# ---------------------------------------------------------------------- the seed notebook


class SeedClassifier(pl.LightningModule):
    """The seed notebook's module: loss and accuracy per step and epoch, validation per epoch."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x)

    def _loss_and_acc(self, batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = batch
        logits = self(x)
        return F.cross_entropy(logits, y), (logits.argmax(dim=1) == y).float().mean()

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        loss, acc = self._loss_and_acc(batch)
        self.log_dict(
            {"train_loss": loss, "train_acc": acc}, prog_bar=True, on_step=True, on_epoch=True
        )
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        loss, acc = self._loss_and_acc(batch)
        self.log_dict({"valid_loss": loss, "valid_acc": acc}, prog_bar=True)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


def classification_loader(samples: int, batch_size: int, seed: int) -> pl.data.TensorLoader:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(samples, 4, generator=generator)
    y = torch.randint(0, 3, (samples,), generator=generator)
    return pl.data.TensorLoader(x, y, batch_size=batch_size)


def test_seed_notebook_metrics_csv_has_lightnings_columns_and_rows(tmp_path):
    trainer = quiet_trainer(
        tmp_path,
        max_epochs=2,
        log_every_n_steps=10,
        enable_checkpointing=False,
        logger=CSVLogger(tmp_path, name="seed"),
    )
    trainer.fit(
        SeedClassifier(),
        classification_loader(47 * 4, batch_size=4, seed=0),
        classification_loader(40, batch_size=8, seed=1),
    )

    frame = pd.read_csv(tmp_path / "seed" / "version_0" / "metrics.csv")
    assert list(frame.columns) == [
        "epoch",
        "step",
        "train_acc_epoch",
        "train_acc_step",
        "train_loss_epoch",
        "train_loss_step",
        "valid_acc",
        "valid_loss",
    ]
    step_rows = frame[frame["train_loss_step"].notna()]
    valid_rows = frame[frame["valid_loss"].notna()]
    epoch_rows = frame[frame["train_loss_epoch"].notna()]
    assert len(frame) == 9 + 2 + 2
    assert step_rows["step"].tolist() == [9, 19, 29, 39, 49, 59, 69, 79, 89]
    assert step_rows["epoch"].tolist() == [0, 0, 0, 0, 1, 1, 1, 1, 1]
    assert step_rows["train_acc_step"].notna().all()
    assert step_rows[["train_acc_epoch", "valid_acc", "valid_loss"]].isna().all().all()
    assert valid_rows["step"].tolist() == [46, 93] and valid_rows["epoch"].tolist() == [0, 1]
    assert valid_rows[["train_loss_step", "train_loss_epoch"]].isna().all().all()
    assert valid_rows["valid_acc"].notna().all()
    assert epoch_rows["step"].tolist() == [46, 93] and epoch_rows["epoch"].tolist() == [0, 1]
    assert epoch_rows[["train_acc_step", "valid_loss"]].isna().all().all()
    assert epoch_rows["train_acc_epoch"].notna().all()
    # each validation row comes right before the training epoch row of the same epoch
    assert list(valid_rows.index + 1) == list(epoch_rows.index)


# ---------------------------------------------------------------------- runs started together

_CLAIM_WHEN_GO = """
import os, sys, time
go = sys.argv[2]
while not os.path.exists(go):
    time.sleep(0.001)
from ltrain.loggers import CSVLogger
print(CSVLogger(sys.argv[1], name="same").log_dir)
"""


def test_loggers_started_together_claim_distinct_versions(tmp_path):
    go = tmp_path / "go"
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", _CLAIM_WHEN_GO, str(tmp_path), str(go)],
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    time.sleep(0.3)  # let every process reach the wait
    go.touch()
    log_dirs = [p.communicate(timeout=30)[0].strip() for p in processes]

    assert all(p.returncode == 0 for p in processes)
    assert sorted(Path(d).name for d in log_dirs) == [
        "version_0",
        "version_1",
        "version_2",
        "version_3",
    ]
    assert sorted(os.listdir(tmp_path / "same")) == [
        "version_0",
        "version_1",
        "version_2",
        "version_3",
    ]


_FIT_WHEN_GO = """
import os, sys, time
sys.path.insert(0, sys.argv[3])
from boring import BoringModel, boring_loader, quiet_trainer
import ltrain as pl
model, loader = BoringModel(), boring_loader(samples=16)
trainer = quiet_trainer(sys.argv[1], max_epochs=1, log_every_n_steps=1, logger=pl.loggers.CSVLogger(sys.argv[1], name="same"))
while not os.path.exists(sys.argv[2]):
    time.sleep(0.001)
trainer.fit(model, loader)
print(trainer.log_dir)
"""


def test_fits_started_together_with_one_logger_name_get_distinct_folders(tmp_path):
    go = tmp_path / "go"
    tests_dir = str(Path(__file__).parent)
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", _FIT_WHEN_GO, str(tmp_path), str(go), tests_dir],
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    time.sleep(3)  # let every process import and build its trainer, then wait for "go"
    go.touch()
    outputs = [p.communicate(timeout=120)[0].strip().splitlines()[-1] for p in processes]
    assert all(p.returncode == 0 for p in processes)
    assert sorted(Path(o).name for o in outputs) == ["version_0", "version_1", "version_2"]
    for output in outputs:
        assert (Path(output) / "metrics.csv").is_file()


def test_run_files_get_the_usual_permissions_not_private_ones(tmp_path):
    from ltrain.files import write_text_atomically

    previous = os.umask(0o022)
    try:
        write_text_atomically(tmp_path / "config.yaml", "a: 1\n")
    finally:
        os.umask(previous)
    assert (tmp_path / "config.yaml").stat().st_mode & 0o777 == 0o644


def test_flush_logs_every_n_steps_other_than_the_default_warns_that_rows_are_flushed_as_written(
    tmp_path, recwarn
):
    pl.loggers.CSVLogger(save_dir=tmp_path)
    assert not [w for w in recwarn if "flush_logs_every_n_steps" in str(w.message)]
    with pytest.warns(UserWarning, match=r"flush_logs_every_n_steps=10\): ltrain writes"):
        pl.loggers.CSVLogger(save_dir=tmp_path, flush_logs_every_n_steps=10)


# ---------------------------------------------------------------------- the logger used directly


def test_a_row_logged_without_a_step_gets_the_count_of_rows_since_the_last_save(tmp_path):
    logger = CSVLogger(tmp_path, name="direct")
    logger.log_metrics({"a": 1.0})
    logger.log_metrics({"a": 2.0, "b": 3.0}, step=5)
    logger.log_metrics({"c": 4.0})
    logger.save()
    logger.log_metrics({"c": 5.0})

    frame = pd.read_csv(logger.metrics_file_path)
    # Lightning's step is the length of its unsaved buffer, and save() empties it
    assert list(frame.columns) == ["a", "b", "c", "step"]
    assert frame["step"].tolist() == [0, 5, 2, 0]
    assert frame["c"].tolist()[2:] == [4.0, 5.0]


def test_flush_logs_every_n_steps_restarts_the_count_where_lightning_would_flush(tmp_path):
    with pytest.warns(UserWarning, match="flush_logs_every_n_steps"):
        logger = CSVLogger(tmp_path, name="direct", flush_logs_every_n_steps=2)
    for value in range(4):
        logger.log_metrics({"a": float(value)})

    assert pd.read_csv(logger.metrics_file_path)["step"].tolist() == [0, 1, 0, 1]


def test_experiment_is_the_writer_with_lightnings_methods(tmp_path):
    logger = CSVLogger(tmp_path, name="direct")
    writer = logger.experiment

    writer.log_metrics({"loss": torch.tensor(0.5)}, step=3)
    writer.log_hparams({"lr": 0.1})
    writer.save()

    assert writer.metrics_file_path == logger.metrics_file_path
    assert writer.log_dir == logger.log_dir == str(tmp_path / "direct" / "version_0")
    assert raw_rows(Path(writer.metrics_file_path)) == [{"loss": "0.5", "step": "3"}]
    assert yaml.safe_load((Path(writer.log_dir) / "hparams.yaml").read_text()) == {"lr": 0.1}


def test_hparams_yaml_holds_every_log_hyperparams_call_merged(tmp_path):
    from argparse import Namespace

    logger = CSVLogger(tmp_path, name="direct")
    logger.log_hyperparams({"lr": 0.1, "name": "x"})
    logger.log_hyperparams(Namespace(lr=0.2, layers=3))

    text = (Path(logger.log_dir) / "hparams.yaml").read_text()
    assert yaml.safe_load(text) == {"layers": 3, "lr": 0.2, "name": "x"}
    with pytest.raises(TypeError, match="expected a dict or an argparse.Namespace, got list"):
        logger.log_hyperparams([("lr", 0.1)])
