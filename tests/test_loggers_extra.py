"""TensorBoard, W&B and MLflow loggers, several loggers sharing one version folder, and the extras.

Each logger's output is read back the way its users read it (TensorBoard's EventAccumulator, the
W&B offline run file, MLflow's client) and compared with the metrics.csv the CSV logger wrote in
the same run: the same names, steps and values. Tests of an extra skip where it is not installed.
"""

from __future__ import annotations

import json
import math
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml
from boring import BoringModel, boring_loader, digits_config, quiet_trainer
from click.testing import CliRunner
from torch.nn import functional as F

import ltrain as pl
from ltrain.app.cli import main
from ltrain.errors import MisconfigurationException
from ltrain.loggers import CSVLogger, MLFlowLogger, MLflowLogger, TensorBoardLogger, WandbLogger


class Logged(BoringModel):
    """Saves its init arguments; logs train_loss per step and per epoch, valid_loss per epoch."""

    def __init__(self, features: int = 4, lr: float = 0.1, note: str = "boring") -> None:
        super().__init__(features, lr)
        self.save_hyperparameters()

    def training_step(self, batch: Any, batch_idx: int) -> Any:
        x, y = batch
        loss = F.mse_loss(self(x), y)
        self.log("train_loss", loss, on_step=True, on_epoch=True)
        return loss


HPARAMS = {"features": 4, "lr": 0.1, "note": "boring"}


def fit(
    tmp_path: Path,
    loggers: Any,
    epochs: int = 2,
    callbacks: Any = None,
    ckpt_path: str | None = None,
    **trainer_kwargs: Any,
) -> pl.Trainer:
    """Two epochs of 4 batches with validation, a row every step."""
    trainer = quiet_trainer(
        tmp_path,
        logger=loggers,
        max_epochs=epochs,
        log_every_n_steps=1,
        enable_checkpointing=bool(callbacks),
        callbacks=callbacks or [],
        **trainer_kwargs,
    )
    trainer.fit(
        Logged(),
        boring_loader(samples=16, batch_size=4),
        boring_loader(samples=8, batch_size=4),
        ckpt_path=ckpt_path,
    )
    return trainer


def csv_series(folder: Path) -> dict[str, list[tuple[int, float]]]:
    """Each metrics.csv column (but step) as the (step, value) pairs of its filled cells."""
    metrics = pd.read_csv(folder / "metrics.csv")
    return {
        column: [
            (int(s), float(v))
            for s, v in zip(metrics["step"], metrics[column], strict=True)
            if v == v
        ]
        for column in metrics.columns
        if column != "step"
    }


def csv_rows(folder: Path) -> list[tuple[int, dict[str, float]]]:
    """metrics.csv as (step, {key: value}) rows, empty cells left out."""
    metrics = pd.read_csv(folder / "metrics.csv")
    return [
        (int(row.pop("step")), {k: float(v) for k, v in row.items() if v == v})
        for row in metrics.to_dict("records")
    ]


def as_float32(series: dict[str, list[tuple[int, float]]]) -> dict[str, list[tuple[int, float]]]:
    return {k: [(s, float(np.float32(v))) for s, v in pairs] for k, pairs in series.items()}


# ---------------------------------------------------------------------- without the extras


def test_import_ltrain_and_the_cli_import_no_logger_package():
    code = (
        "import sys, ltrain, ltrain.app.cli\n"
        "from ltrain.loggers import TensorBoardLogger, WandbLogger, MLFlowLogger\n"
        "print(sorted(m for m in ('tensorboard', 'wandb', 'mlflow') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


@pytest.mark.parametrize(
    ("logger", "package", "extra"),
    [
        (TensorBoardLogger, "tensorboard", "tensorboard"),
        (WandbLogger, "wandb", "wandb"),
        (MLFlowLogger, "mlflow", "mlflow"),
    ],
)
def test_missing_extra_is_one_line_naming_the_pip_install(monkeypatch, logger, package, extra):
    monkeypatch.setitem(sys.modules, package, None)  # as if not installed
    with pytest.raises(MisconfigurationException) as raised:
        logger()
    message = str(raised.value)
    assert "\n" not in message
    assert logger.__name__ in message and f"pip install 'ltrain[{extra}]'" in message


def test_mlflow_logger_has_both_spellings():
    assert MLflowLogger is MLFlowLogger


# ---------------------------------------------------------------------- TensorBoard


def tensorboard_series(folder: Path) -> dict[str, list[tuple[int, float]]]:
    """What TensorBoard shows: every scalar tag as (step, value) pairs, purges applied."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(folder), size_guidance={"scalars": 0})
    events.Reload()
    return {
        tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]
    }


def tensorboard_hparams(folder: Path, metrics: bool = False) -> Any:
    """The HPARAMS tab's values (or, with `metrics`, the metric columns it declares)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    events = EventAccumulator(str(folder))
    events.Reload()
    values: dict[str, Any] = {}
    columns: set[str] = set()
    for content in events.PluginTagToContent("hparams").values():
        data = plugin_data_pb2.HParamsPluginData.FromString(content)
        for key, value in data.session_start_info.hparams.items():
            values[key] = getattr(value, value.WhichOneof("kind"))
        columns.update(info.name.tag for info in data.experiment.metric_infos)
    return columns if metrics else values


def test_tensorboard_scalars_are_the_metrics_csv_columns_at_the_same_steps(tmp_path):
    pytest.importorskip("tensorboard")
    trainer = fit(
        tmp_path, [CSVLogger(tmp_path, name="run"), TensorBoardLogger(tmp_path, name="run")]
    )
    folder = tmp_path / "run" / "version_0"
    assert trainer.log_dir == str(folder)
    expected = as_float32(csv_series(folder))
    assert {"epoch", "train_loss_step", "train_loss_epoch", "valid_loss"} <= set(expected)
    assert tensorboard_series(folder) == expected


def test_tensorboard_writes_hparams_yaml_and_the_hparams_tab(tmp_path):
    pytest.importorskip("tensorboard")
    trainer = fit(tmp_path, TensorBoardLogger(tmp_path, name="tb", sub_dir="events"), epochs=1)
    folder = Path(trainer.logger.log_dir)
    assert folder == tmp_path / "tb" / "version_0" / "events"
    assert yaml.safe_load((folder / "hparams.yaml").read_text()) == HPARAMS
    assert tensorboard_hparams(folder) == HPARAMS
    assert tensorboard_hparams(folder, metrics=True) == {"hp_metric"}
    assert "hp_metric" not in tensorboard_series(folder)  # no placeholder scalar


def test_tensorboard_writes_an_empty_hparams_yaml_for_a_module_without_hyperparameters(tmp_path):
    pytest.importorskip("tensorboard")
    logger = TensorBoardLogger(tmp_path, name="tb")
    trainer = quiet_trainer(tmp_path, logger=logger)

    trainer.validate(BoringModel(), boring_loader(8), verbose=False)

    assert (Path(logger.log_dir) / "hparams.yaml").read_text() == "{}\n"


def test_tensorboard_resume_shows_each_row_once_as_an_uninterrupted_run(tmp_path):
    """Resumed from the epoch-0 checkpoint of a finished run: epoch 1's rows are logged again."""
    pytest.importorskip("tensorboard")

    def loggers(version: int | None = None) -> list[Any]:
        return [
            CSVLogger(tmp_path, name="run", version=version),
            TensorBoardLogger(tmp_path, name="run", version=version),
        ]

    every_epoch = pl.callbacks.ModelCheckpoint(save_top_k=-1)
    fit(tmp_path, loggers(), callbacks=[every_epoch], deterministic=True)
    folder = tmp_path / "run" / "version_0"
    uninterrupted = tensorboard_series(folder)
    assert uninterrupted == as_float32(csv_series(folder))
    (first,) = folder.glob("checkpoints/epoch=0-*.ckpt")

    resumed = loggers(version=0)  # as the CLI's --resume gives the run's version
    fit(
        tmp_path,
        resumed,
        callbacks=[pl.callbacks.ModelCheckpoint()],
        ckpt_path=str(first),
        deterministic=True,
    )
    assert tensorboard_series(folder) == uninterrupted
    assert tensorboard_hparams(folder) == HPARAMS


def test_a_writer_opened_in_the_same_second_as_a_later_named_file_is_read_after_it(tmp_path):
    """TensorBoard reads event files in name order: `<second>.<host>.<pid>.<n>` puts writer 10
    before writer 9 of the same second (a resume's purge marker before the rows it hides)."""
    pytest.importorskip("tensorboard")
    folder = tmp_path / "run" / "version_0"
    folder.mkdir(parents=True)
    earlier = f"events.out.tfevents.{int(time.time())}.~host.1.99"  # sorts after any of ours
    (folder / earlier).write_bytes(b"")
    logger = TensorBoardLogger(tmp_path, name="run", version=0)
    logger.experiment.flush()
    names = sorted(p.name for p in folder.glob("events.out.tfevents.*"))
    assert len(names) == 2 and names[0] == earlier


# ---------------------------------------------------------------------- one version folder


def test_several_loggers_share_the_first_ones_version_folder(tmp_path):
    pytest.importorskip("tensorboard")
    (tmp_path / "run" / "version_0").mkdir(parents=True)  # an earlier run
    for _ in range(2):
        csv, tensorboard = CSVLogger(tmp_path, name="run"), TensorBoardLogger(tmp_path, name="run")
        elsewhere = TensorBoardLogger(tmp_path, name="other")
        fit(tmp_path, [csv, tensorboard, elsewhere], epochs=1)
        assert tensorboard.version == csv.version
        assert tensorboard.log_dir == csv.log_dir
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == [
        "version_0",
        "version_1",
        "version_2",
    ]
    for version in ("version_1", "version_2"):
        files = sorted(p.name.split(".")[0] for p in (tmp_path / "run" / version).iterdir())
        assert files == ["events", "hparams", "metrics", "run"]
    assert sorted(p.name for p in (tmp_path / "other").iterdir()) == ["version_0", "version_1"]


def test_the_default_logger_is_tensorboards_with_a_csv_logger_in_its_version_folder(tmp_path):
    pytest.importorskip("tensorboard")

    class AddsAnImage(Logged):
        def on_train_end(self) -> None:
            self.logger.experiment.add_image("weights", self.layer.weight[None], 0)

    trainer = quiet_trainer(tmp_path, max_epochs=1, enable_checkpointing=False)
    trainer.fit(AddsAnImage(), boring_loader(16, 8))

    assert [type(logger) for logger in trainer.loggers] == [TensorBoardLogger, CSVLogger]
    assert trainer.logger is trainer.loggers[0]
    folder = tmp_path / "lightning_logs" / "version_0"
    assert trainer.log_dir == str(folder) == trainer.loggers[1].log_dir
    files = sorted(p.name.split(".")[0] for p in folder.iterdir())
    assert files == ["events", "hparams", "metrics", "run"]
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(folder))
    events.Reload()
    assert events.Tags()["images"] == ["weights"]
    assert trainer.loggers[1].experiment.metrics_file_path == str(folder / "metrics.csv")


def test_without_tensorboard_the_default_logger_is_the_csv_logger_alone(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # as if not installed
    trainer = quiet_trainer(tmp_path, max_epochs=1, enable_checkpointing=False)
    trainer.fit(Logged(), boring_loader(16, 8))

    assert [type(logger) for logger in trainer.loggers] == [CSVLogger]
    assert (tmp_path / "lightning_logs" / "version_0" / "metrics.csv").is_file()


def test_a_logger_given_a_version_keeps_it_beside_a_sharing_one(tmp_path):
    first, pinned = CSVLogger(tmp_path, name="run"), CSVLogger(tmp_path, name="run", version=7)
    quiet_trainer(tmp_path, logger=[first, pinned])
    assert (first.version, pinned.version) == (0, 7)


# ---------------------------------------------------------------------- the command line

TINY = digits_config()
TINY_HPARAMS = {
    "in_features": 64,
    "lr": 0.01,
    "num_classes": 10,
    "optimizer": "adam",
    "weight_decay": 0.0,
}


def fit_config(folder: Path, loggers: list[dict[str, Any]]) -> Any:
    config = {**TINY, "trainer": {**TINY["trainer"], "logger": loggers}}
    (folder / "tiny.yaml").write_text(yaml.safe_dump(config))
    return CliRunner().invoke(main, ["fit", "tiny.yaml"], catch_exceptions=False)


def test_yaml_logger_list_writes_csv_tensorboard_and_hparams_into_one_run_folder(
    tmp_path, monkeypatch
):
    pytest.importorskip("tensorboard")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs" / "tiny" / "version_0").mkdir(parents=True)
    result = fit_config(
        tmp_path,
        [{"class_path": "CSVLogger"}, {"class_path": "ltrain.loggers.TensorBoardLogger"}],
    )
    assert result.exit_code == 0, result.output
    folder = tmp_path / "runs" / "tiny" / "version_1"
    assert sorted(p.name for p in (tmp_path / "runs" / "tiny").iterdir()) == [
        "version_0",
        "version_1",
    ]
    assert yaml.safe_load((folder / "hparams.yaml").read_text()) == TINY_HPARAMS
    assert tensorboard_series(folder) == as_float32(csv_series(folder))
    assert tensorboard_hparams(folder) == TINY_HPARAMS


# ---------------------------------------------------------------------- W&B

_BLOCK, _HEADER = 32768, 7


def wandb_records(save_dir: Path) -> list[Any]:
    """The records of the one offline run under `save_dir`, once W&B has written them all.

    W&B's service process finishes the file after `finish()` returns, so this waits (up to 20 s)
    for the run's last record, `exit`.
    """
    (path,) = save_dir.glob("wandb/offline-run-*/run-*.wandb")
    deadline = time.monotonic() + 20
    while True:
        records = read_wandb_file(path.read_bytes())
        if any(r.WhichOneof("record_type") == "exit" for r in records):
            return records
        if time.monotonic() > deadline:
            raise AssertionError(f"{path} has no exit record")
        time.sleep(0.05)


def read_wandb_file(data: bytes) -> list[Any]:
    """The protobuf records of an offline run's `.wandb` file.

    The file is a 7-byte header, then 32 KiB blocks of chunks; a chunk is a 7-byte header (CRC,
    length, type: 1 whole record, 2 first, 3 middle, 4 last piece) and a piece of a `Record`.
    A block's last bytes are zeros when too few for a chunk header.
    """
    from wandb.proto import wandb_internal_pb2

    records, pieces, position = [], [], _HEADER
    while position + _HEADER <= len(data):
        room = _BLOCK - position % _BLOCK
        if room < _HEADER:
            position += room
            continue
        _, length, kind = struct.unpack("<IHB", data[position : position + _HEADER])
        if kind == 0 or position + _HEADER + length > len(data):
            break  # the end, or a chunk still being written
        pieces.append(data[position + _HEADER : position + _HEADER + length])
        position += _HEADER + length
        if kind in (1, 4):
            records.append(wandb_internal_pb2.Record.FromString(b"".join(pieces)))
            pieces = []
    return records


def wandb_history(records: list[Any]) -> list[tuple[int, dict[str, float]]]:
    """Each logged row as (trainer/global_step, values), W&B's own `_` keys left out."""
    rows = []
    for record in records:
        if record.WhichOneof("record_type") != "history":
            continue
        items = {
            i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in record.history.item
        }
        values = {k: float(v) for k, v in items.items() if not k.startswith("_")}
        rows.append((int(values.pop("trainer/global_step")), values))
    return rows


def wandb_config(records: list[Any]) -> dict[str, Any]:
    config: dict[str, Any] = {}
    for record in records:
        kind = record.WhichOneof("record_type")
        updates = record.run.config.update if kind == "run" else record.config.update
        if kind in ("run", "config"):
            config.update({i.key: json.loads(i.value_json) for i in updates})
    return {k: v for k, v in config.items() if not k.startswith("_")}


@pytest.fixture
def offline_wandb(tmp_path, monkeypatch):
    """W&B without network, console capture or files outside tmp_path."""
    wandb = pytest.importorskip("wandb")
    for name, value in {
        "WANDB_MODE": "offline",
        "WANDB_SILENT": "true",
        "WANDB_CONSOLE": "off",
        "WANDB_CONFIG_DIR": str(tmp_path / "wandb-config"),
        "WANDB_CACHE_DIR": str(tmp_path / "wandb-cache"),
        "WANDB_DATA_DIR": str(tmp_path / "wandb-data"),
    }.items():
        monkeypatch.setenv(name, value)
    yield wandb
    wandb.finish()


def test_wandb_offline_run_holds_each_metrics_csv_row_and_the_hparams(tmp_path, offline_wandb):
    logger = WandbLogger(name="boring-run", save_dir=tmp_path / "wb", project="p", offline=True)
    fit(tmp_path, [CSVLogger(tmp_path, name="run"), logger])
    run_id = logger.version
    logger.experiment.finish()
    records = wandb_records(tmp_path / "wb")
    (run,) = [r.run for r in records if r.WhichOneof("record_type") == "run"]
    assert (run.run_id, run.display_name, run.project) == (run_id, "boring-run", "p")
    assert wandb_history(records) == csv_rows(tmp_path / "run" / "version_0")
    assert wandb_config(records) == HPARAMS


def test_yaml_wandb_logger_keeps_its_own_run_id_and_folder(tmp_path, monkeypatch, offline_wandb):
    monkeypatch.chdir(tmp_path)
    result = fit_config(
        tmp_path,
        [
            {"class_path": "CSVLogger"},
            {"class_path": "WandbLogger", "init_args": {"offline": True, "save_dir": "wb"}},
        ],
    )
    assert result.exit_code == 0, result.output
    offline_wandb.finish()
    (run,) = [r.run for r in wandb_records(tmp_path / "wb") if r.WhichOneof("record_type") == "run"]
    assert run.run_id != "0" and run.project == "lightning_logs"  # no run-folder version given
    assert wandb_history(wandb_records(tmp_path / "wb")) == csv_rows(
        tmp_path / "runs" / "tiny" / "version_0"
    )


# ---------------------------------------------------------------------- MLflow


@pytest.fixture
def mlflow_client(monkeypatch):
    mlflow = pytest.importorskip("mlflow")
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return mlflow.tracking.MlflowClient


def mlflow_series(client: Any, run_id: str) -> dict[str, list[tuple[int, float]]]:
    keys = client.get_run(run_id).data.metrics
    return {
        key: sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))
        for key in keys
    }


def test_mlflow_file_store_holds_the_metrics_csv_columns_and_the_params(tmp_path, mlflow_client):
    uri = f"file:{tmp_path / 'store'}"
    logger = MLFlowLogger("boring", run_name="first", tracking_uri=uri, tags={"team": "x"})
    fit(tmp_path, [CSVLogger(tmp_path, name="run"), logger])
    client = mlflow_client(tracking_uri=uri)
    run = client.get_run(logger.run_id)
    assert run.info.status == "FINISHED" and run.info.run_name == "first"
    assert run.data.tags["team"] == "x"
    assert client.get_experiment(logger.experiment_id).name == "boring"
    assert run.data.params == {k: str(v) for k, v in HPARAMS.items()}
    expected = {k: sorted(pairs) for k, pairs in csv_series(tmp_path / "run" / "version_0").items()}
    assert mlflow_series(client, logger.run_id) == expected


def test_mlflow_renames_characters_it_refuses_once_with_a_warning(tmp_path, mlflow_client):
    logger = MLflowLogger(save_dir=tmp_path / "store", prefix="val")
    with pytest.warns(UserWarning, match="'val-acc@1' is logged as 'val-acc_1'"):
        logger.log_metrics({"acc@1": 0.5}, step=3)
    logger.log_metrics({"acc@1": 0.75}, step=4)
    client = mlflow_client(tracking_uri=logger.tracking_uri)
    history = client.get_metric_history(logger.run_id, "val-acc_1")
    assert [(m.step, m.value) for m in history] == [(3, 0.5), (4, 0.75)]
    assert logger.save_dir == str(tmp_path / "store")


def test_mlflow_file_store_refused_by_mlflow_is_refused_before_the_run(
    tmp_path, monkeypatch, mlflow_client
):
    variables = pytest.importorskip("mlflow.environment_variables")
    if not hasattr(variables, "MLFLOW_ALLOW_FILE_STORE"):
        pytest.skip("this MLflow takes file stores without asking")
    tmp_path.joinpath("store").mkdir()
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE")
    with pytest.raises(MisconfigurationException, match="MLFLOW_ALLOW_FILE_STORE=true"):
        MLFlowLogger(save_dir=tmp_path / "store")
    assert list(tmp_path.joinpath("store").iterdir()) == []


def test_mlflow_without_a_store_is_one_line(mlflow_client):
    with pytest.raises(MisconfigurationException, match="give tracking_uri .* or save_dir"):
        MLFlowLogger(save_dir=None)


def test_yaml_mlflow_logger_first_leaves_the_run_folder_under_runs(
    tmp_path, monkeypatch, mlflow_client
):
    monkeypatch.chdir(tmp_path)
    result = fit_config(tmp_path, [{"class_path": "MLflowLogger"}, {"class_path": "CSVLogger"}])
    assert result.exit_code == 0, result.output
    folder = tmp_path / "runs" / "tiny" / "version_0"
    assert (folder / "metrics.csv").is_file()
    client = mlflow_client(tracking_uri=(tmp_path / "mlruns").as_uri())
    (run,) = client.search_runs([client.get_experiment_by_name("lightning_logs").experiment_id])
    assert math.isclose(run.data.metrics["valid_loss"], csv_series(folder)["valid_loss"][-1][1])
