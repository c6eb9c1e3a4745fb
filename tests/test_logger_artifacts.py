"""What loggers do with checkpoints and models: `log_model` uploads, `after_save_checkpoint`,
TensorBoard's `log_graph`, and W&B's media, tables and `watch`.

Everything is read back from where users find it: the W&B offline run file, the MLflow file
store, TensorBoard's event file. Where Lightning is installed, the same user code runs through
`lightning.pytorch` and ltrain and what each left behind is compared.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import pytest
import test_loggers_extra
import torch
import yaml
from boring import BoringModel, boring_loader, quiet_trainer
from parity.observe import kit, loader, regression, trainer
from test_loggers_extra import wandb_records

import ltrain as pl
from ltrain.callbacks import ModelCheckpoint
from ltrain.errors import MisconfigurationException
from ltrain.loggers import MLFlowLogger, TensorBoardLogger, WandbLogger


@pytest.fixture(autouse=True)
def _deterministic_flag_restored():
    """Lightning's Trainer(deterministic=True), run in this process by the comparisons here,
    leaves torch's deterministic algorithms on; later tests in this worker expect them off."""
    before = torch.are_deterministic_algorithms_enabled()
    yield
    torch.use_deterministic_algorithms(before)


def fit(root: Path, loggers: Any, model: Any = None, **checkpointing: Any) -> pl.Trainer:
    """Two epochs of 4 batches; a ModelCheckpoint keeping the best `valid_loss` and last.ckpt."""
    torch.manual_seed(0)
    options = {"monitor": "valid_loss", "save_last": True, **checkpointing}
    run = quiet_trainer(
        root,
        logger=loggers,
        max_epochs=2,
        callbacks=[ModelCheckpoint(dirpath=root / "ckpt", **options)],
    )
    run.fit(model or BoringModel(), boring_loader(16, 4), boring_loader(8, 4))
    return run


# ---------------------------------------------------------------------- after_save_checkpoint


def recording_logger(framework: Any) -> Any:
    """A logger of `framework` that lists the checkpoint folder whenever a checkpoint is saved."""

    class Recording(framework.loggers.Logger):
        def __init__(self) -> None:
            super().__init__()
            self.calls: list[tuple[str, list[str]]] = []

        @property
        def name(self) -> str:
            return "recording"

        @property
        def version(self) -> int:
            return 0

        def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
            pass

        def log_metrics(self, metrics: Any, step: Any = None) -> None:
            pass

        def after_save_checkpoint(self, checkpoint_callback: Any) -> None:
            folder = checkpoint_callback.dirpath
            saved = Path(checkpoint_callback._last_checkpoint_saved).name
            self.calls.append((saved, sorted(os.listdir(folder))))

    return Recording()


def checkpoint_saves(framework: Any, root: Path) -> list[tuple[str, list[str]]]:
    framework.seed_everything(0)
    loggers = [recording_logger(framework), recording_logger(framework)]
    callback = framework.callbacks.ModelCheckpoint(
        dirpath=root / "ckpt", monitor="valid_loss", save_last=True
    )
    run = trainer(framework, root, logger=loggers, callbacks=[callback], max_epochs=2)
    run.fit(kit(framework).Regressor(), loader(regression()), loader(regression(32, seed=2)))
    assert loggers[0].calls == loggers[1].calls  # every logger hears of every file
    return loggers[0].calls


def test_every_logger_hears_of_each_checkpoint_file_right_after_it_is_written(tmp_path):
    assert checkpoint_saves(pl, tmp_path) == [
        ("epoch=0-step=8.ckpt", ["epoch=0-step=8.ckpt"]),
        ("last.ckpt", ["epoch=0-step=8.ckpt", "last.ckpt"]),
        # the new best file is announced before the old one is deleted
        ("epoch=1-step=16.ckpt", ["epoch=0-step=8.ckpt", "epoch=1-step=16.ckpt", "last.ckpt"]),
        ("last.ckpt", ["epoch=1-step=16.ckpt", "last.ckpt"]),
    ]


def test_after_save_checkpoint_calls_match_lightnings(tmp_path):
    lightning = pytest.importorskip("lightning.pytorch")
    assert checkpoint_saves(pl, tmp_path / "ours") == checkpoint_saves(
        lightning, tmp_path / "lightning"
    )


def test_the_base_logger_ignores_checkpoints_and_graphs():
    logger = pl.loggers.Logger()
    logger.after_save_checkpoint(ModelCheckpoint())
    logger.log_graph(BoringModel())


# ---------------------------------------------------------------------- W&B

offline_wandb = test_loggers_extra.offline_wandb  # W&B offline, its files under tmp_path


def wandb_artifacts(records: list[Any]) -> list[tuple[str, str, dict, list[str], list[str]]]:
    """Each logged artifact as (name, type, metadata, sorted aliases, the files it holds)."""
    return [
        (
            r.artifact.name,
            r.artifact.type,
            json.loads(r.artifact.metadata),
            sorted(r.artifact.aliases),
            [entry.path for entry in r.artifact.manifest.contents],
        )
        for r in records
        if r.WhichOneof("record_type") == "artifact"
    ]


def settings(key: str) -> dict[str, Any]:
    """The ModelCheckpoint settings Lightning puts in an artifact's metadata."""
    return {
        key: {
            "monitor": "valid_loss",
            "mode": "min",
            "save_last": True,
            "save_top_k": 1,
            "save_weights_only": False,
            "_every_n_train_steps": 0,
        }
    }


def finished_wandb_records(logger: WandbLogger, save_dir: Path) -> list[Any]:
    logger.experiment.finish()
    return wandb_records(save_dir)


def test_wandb_log_model_all_uploads_each_checkpoint_when_it_is_saved(tmp_path, offline_wandb):
    logger = WandbLogger(save_dir=tmp_path / "wb", log_model="all")
    run = fit(tmp_path, logger)
    callback = run.checkpoint_callback
    run_id = logger.version
    records = finished_wandb_records(logger, tmp_path / "wb")
    uploads = wandb_artifacts(records)
    assert [(a[0], a[1], a[3], a[4]) for a in uploads] == [
        (f"model-{run_id}", "model", ["best", "latest"], ["model.ckpt"]),
        (f"model-{run_id}", "model", ["latest"], ["model.ckpt"]),
        (f"model-{run_id}", "model", ["best", "latest"], ["model.ckpt"]),
        (f"model-{run_id}", "model", ["latest"], ["model.ckpt"]),
    ]
    names = [a[2]["original_filename"] for a in uploads]
    assert names == ["epoch=0-step=4.ckpt", "last.ckpt", "epoch=1-step=8.ckpt", "last.ckpt"]
    assert uploads[2][2] == {
        "score": callback.best_k_models[callback.best_model_path],
        "original_filename": "epoch=1-step=8.ckpt",
        **settings("ModelCheckpoint"),
    }
    # uploaded during training: the first one before the last row
    kinds = [r.WhichOneof("record_type") for r in records]
    last_row = len(kinds) - 1 - kinds[::-1].index("history")
    assert kinds.index("artifact") < last_row


def test_wandb_log_model_true_uploads_the_kept_checkpoints_at_the_end(tmp_path, offline_wandb):
    logger = WandbLogger(save_dir=tmp_path / "wb", log_model=True, checkpoint_name="regressor")
    fit(tmp_path, logger)
    records = finished_wandb_records(logger, tmp_path / "wb")
    uploads = wandb_artifacts(records)
    assert [(a[0], a[2]["original_filename"], a[3]) for a in uploads] == [
        ("regressor", "epoch=1-step=8.ckpt", ["best", "latest"]),
        ("regressor", "last.ckpt", ["latest"]),
    ]
    kinds = [r.WhichOneof("record_type") for r in records]  # uploaded after the last row
    assert kinds.index("artifact") > len(kinds) - 1 - kinds[::-1].index("history")


def test_wandb_log_model_false_uploads_nothing(tmp_path, offline_wandb):
    logger = WandbLogger(save_dir=tmp_path / "wb", log_model=False)
    fit(tmp_path, logger)
    assert wandb_artifacts(finished_wandb_records(logger, tmp_path / "wb")) == []


class FailsInSecondEpoch(BoringModel):
    def training_step(self, batch: Any, batch_idx: int) -> Any:
        if self.current_epoch == 1:
            raise RuntimeError("boom")
        return super().training_step(batch, batch_idx)


def test_a_failed_run_uploads_checkpoints_to_mlflow_but_not_to_wandb_as_lightning_does(
    tmp_path, offline_wandb, mlflow_store
):
    wandb_logger = WandbLogger(save_dir=tmp_path / "wb", log_model=True)
    mlflow_logger = MLFlowLogger(tracking_uri=mlflow_store, log_model=True)
    with pytest.raises(RuntimeError, match="boom"):
        fit(tmp_path, [wandb_logger, mlflow_logger], FailsInSecondEpoch())
    assert wandb_artifacts(finished_wandb_records(wandb_logger, tmp_path / "wb")) == []
    assert mlflow_artifact_tree(mlflow_logger) == {
        "epoch=0-step=4": ["aliases.txt", "epoch=0-step=4.ckpt", "metadata.yaml"],
        "last": ["aliases.txt", "last.ckpt", "metadata.yaml"],
    }


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"log_model": "some"}, "WandbLogger(log_model='some'): expected True"),
        ({"log_model": True, "offline": True}, "WandbLogger(offline=True, log_model=True)"),
        ({"add_file_policy": "copy"}, "WandbLogger(add_file_policy='copy'): expected 'mutable'"),
    ],
)
def test_wandb_refuses_a_bad_upload_option_in_one_line(offline_wandb, options, message):
    with pytest.raises(MisconfigurationException) as raised:
        WandbLogger(**options)
    assert str(raised.value).startswith(message) and "\n" not in str(raised.value)


def history_rows(records: list[Any]) -> list[dict[str, Any]]:
    return [
        {i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in r.history.item}
        for r in records
        if r.WhichOneof("record_type") == "history"
    ]


def test_wandb_images_tables_and_text_go_in_at_trainer_global_step(tmp_path, offline_wandb):
    logger = WandbLogger(save_dir=tmp_path / "wb")
    logger.log_image(
        "samples", [torch.zeros(3, 4, 4), torch.ones(3, 4, 4)], step=5, caption=["a", "b"]
    )
    logger.log_table("table", columns=["x", "y"], data=[[1, 2], [3, 4]], step=6)
    logger.log_text("notes", columns=["text"], data=[["hello"]])
    rows = history_rows(finished_wandb_records(logger, tmp_path / "wb"))
    images, table, text = rows
    assert images["trainer/global_step"] == 5
    assert images["samples/_type"] == "images/separated" and images["samples/count"] == 2
    assert images["samples/captions"] == ["a", "b"]
    assert (table["trainer/global_step"], table["table/_type"]) == (6, "table-file")
    assert (table["table/nrows"], table["table/ncols"]) == (2, 2)
    assert (text["notes/_type"], text["notes/nrows"], text["notes/ncols"]) == ("table-file", 1, 1)


def test_wandb_media_keywords_need_one_value_per_item(offline_wandb):
    logger = WandbLogger()
    with pytest.raises(ValueError, match="caption has 1 values for 2 items"):
        logger.log_image("samples", [torch.zeros(3, 2, 2)] * 2, caption=["only one"])
    with pytest.raises(TypeError, match="log_image: expected a list, got Tensor"):
        logger.log_image("samples", torch.zeros(3, 2, 2))


def test_wandb_watch_logs_gradient_histograms_into_the_run(tmp_path, offline_wandb):
    logger = WandbLogger(save_dir=tmp_path / "wb")
    model = BoringModel()
    logger.watch(model, log_freq=1)
    fit(tmp_path, logger, model)
    rows = history_rows(finished_wandb_records(logger, tmp_path / "wb"))
    gradients = [r for r in rows if "gradients/layer.weight/_type" in r]
    assert gradients and gradients[0]["gradients/layer.weight/_type"] == "histogram"


class FakeRun:
    """Stands in for a W&B run where the real one needs the W&B server."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str | None]] = []

    def use_artifact(self, artifact: str, type: str | None = None) -> Any:
        self.calls.append((artifact, type))
        return self

    def download(self, root: str | None = None) -> str:
        return f"downloaded into {root}"

    def finish(self, *args: Any, **kwargs: Any) -> None:
        pass


def test_wandb_use_and_download_artifact_go_through_the_run(tmp_path, offline_wandb, monkeypatch):
    logger = WandbLogger()
    logger._run = run = FakeRun()
    assert logger.use_artifact("team/p/model-x:best", "model") is run
    monkeypatch.setattr(offline_wandb, "run", run)
    folder = WandbLogger.download_artifact("team/p/model-x:v1", save_dir=tmp_path / "into")
    assert folder == f"downloaded into {tmp_path / 'into'}"
    assert run.calls == [("team/p/model-x:best", "model"), ("team/p/model-x:v1", None)]


# ---------------------------------------------------------------------- MLflow


@pytest.fixture
def mlflow_store(tmp_path, monkeypatch) -> str:
    pytest.importorskip("mlflow")
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return (tmp_path / "store").as_uri()


def mlflow_artifacts_folder(logger: Any) -> Path:
    uri = logger.experiment.get_run(logger.run_id).info.artifact_uri
    return Path(unquote(urlparse(uri).path))


def mlflow_artifact_tree(logger: Any) -> dict[str, list[str]]:
    """The run's artifact folders and the files in each, as the file store keeps them."""
    root = mlflow_artifacts_folder(logger)
    if not root.is_dir():
        return {}
    return {folder.name: sorted(os.listdir(folder)) for folder in sorted(root.iterdir())}


def mlflow_notes(logger: Any, folder: str) -> tuple[dict[str, Any], str]:
    """An uploaded checkpoint's metadata.yaml (read) and aliases.txt (as written)."""
    root = mlflow_artifacts_folder(logger) / folder
    metadata = yaml.safe_load((root / "metadata.yaml").read_text())
    return metadata, (root / "aliases.txt").read_text()


@pytest.mark.parametrize(
    ("log_model", "folders"),
    [
        ("all", ["epoch=0-step=4", "epoch=1-step=8", "last"]),  # each file when saved
        (True, ["epoch=1-step=8", "last"]),  # the files kept at the end
        (False, []),
    ],
)
def test_mlflow_log_model_logs_checkpoints_with_metadata_and_aliases(
    tmp_path, mlflow_store, log_model, folders
):
    logger = MLFlowLogger(tracking_uri=mlflow_store, log_model=log_model)
    run = fit(tmp_path, logger)
    tree = mlflow_artifact_tree(logger)
    assert tree == {f: sorted(["aliases.txt", "metadata.yaml", f"{f}.ckpt"]) for f in folders}
    if not folders:
        return
    callback = run.checkpoint_callback
    best_score = float(callback.best_model_score)
    best, best_aliases = mlflow_notes(logger, "epoch=1-step=8")
    assert best == {
        "score": best_score,
        "original_filename": "epoch=1-step=8.ckpt",
        **settings("Checkpoint"),
    }
    assert best_aliases == "['latest', 'best']"
    last, last_aliases = mlflow_notes(logger, "last")
    assert (last["original_filename"], last["score"], last_aliases) == (
        "last.ckpt",
        best_score,  # the score of the latest top-k file (Lightning's current_score)
        "['latest']",
    )
    uploaded = mlflow_artifacts_folder(logger) / "last" / "last.ckpt"
    assert uploaded.read_bytes() == (tmp_path / "ckpt" / "last.ckpt").read_bytes()


def test_mlflow_log_model_true_with_every_file_kept_logs_them_as_they_are_saved(
    tmp_path, mlflow_store
):
    logger = MLFlowLogger(tracking_uri=mlflow_store, log_model=True)
    seen: list[list[str]] = []

    class Watch(pl.Callback):
        def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
            seen.append(sorted(mlflow_artifact_tree(logger)))

    torch.manual_seed(0)
    checkpoints = ModelCheckpoint(tmp_path / "ckpt", save_top_k=-1, save_on_train_epoch_end=True)
    run = quiet_trainer(tmp_path, logger=logger, max_epochs=2, callbacks=[checkpoints, Watch()])
    run.fit(BoringModel(), boring_loader(16, 4))
    # Watch runs before the ModelCheckpoint, so each epoch sees the files saved before it
    assert seen == [[], ["epoch=0-step=4"]]
    assert sorted(mlflow_artifact_tree(logger)) == ["epoch=0-step=4", "epoch=1-step=8"]


def test_mlflow_refuses_a_bad_log_model_in_one_line(mlflow_store):
    with pytest.raises(MisconfigurationException) as raised:
        MLFlowLogger(tracking_uri=mlflow_store, log_model="best")
    message = str(raised.value)
    assert (
        message.startswith("MLFlowLogger(log_model='best'): expected True") and "\n" not in message
    )


# ---------------------------------------------------------------------- the same run in Lightning


def uploads_of(framework: Any, root: Path, mlflow_uri: str) -> dict[str, Any]:
    """One tiny fit of `framework` with W&B and MLflow uploading every checkpoint: what each
    store holds (run ids left out)."""
    framework.seed_everything(0)
    loggers = framework.loggers
    wandb_logger = loggers.WandbLogger(save_dir=str(root / "wb"), log_model="all")
    mlflow_logger = loggers.MLFlowLogger(tracking_uri=mlflow_uri, log_model="all")
    callback = framework.callbacks.ModelCheckpoint(
        dirpath=root / "ckpt", monitor="valid_loss", save_last=True
    )
    run = trainer(
        framework, root, logger=[mlflow_logger, wandb_logger], callbacks=[callback], max_epochs=2
    )
    run.fit(kit(framework).Regressor(), loader(regression()), loader(regression(32, seed=2)))
    run_id = wandb_logger.version
    wandb_logger.experiment.finish()
    wandb_uploads = [
        (name.replace(run_id, "<id>"), *rest)
        for name, *rest in wandb_artifacts(wandb_records(root / "wb"))
    ]
    tree = mlflow_artifact_tree(mlflow_logger)
    return {
        "wandb": wandb_uploads,
        "mlflow": tree,
        "mlflow notes": {folder: mlflow_notes(mlflow_logger, folder) for folder in tree},
    }


def test_log_model_uploads_match_lightnings(tmp_path, offline_wandb, mlflow_store):
    lightning = pytest.importorskip("lightning.pytorch")
    ours = uploads_of(pl, tmp_path / "ours", mlflow_store)
    theirs = uploads_of(lightning, tmp_path / "lightning", (tmp_path / "store-l").as_uri())
    assert len(ours["wandb"]) == 4 and len(ours["mlflow"]) == 3
    assert ours == theirs


# ---------------------------------------------------------------------- TensorBoard graph


def tensorboard_graph(folder: Path) -> Any:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(folder))
    events.Reload()
    return events.Graph() if events.Tags()["graph"] else None


class WithExampleInput(BoringModel):
    """Records what the batch-transfer hook saw."""

    def __init__(self) -> None:
        super().__init__()
        self.example_input_array = torch.zeros(2, 4)
        self.transferred: list[tuple[int, ...]] = []

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        if isinstance(batch, torch.Tensor):
            self.transferred.append(tuple(batch.shape))
        return batch


@pytest.mark.parametrize("log_graph", [True, False])
def test_tensorboard_log_graph_adds_the_graph_traced_on_example_input_array(tmp_path, log_graph):
    pytest.importorskip("tensorboard")
    logger = TensorBoardLogger(tmp_path, log_graph=log_graph)
    model = WithExampleInput()
    fit(tmp_path, logger, model)
    graph = tensorboard_graph(Path(logger.log_dir))
    if not log_graph:  # the default: no graph, the example input left alone
        assert graph is None and model.transferred == []
        return
    assert any(node.op == "aten::linear" for node in graph.node)
    assert model.transferred == [(2, 4)]  # through the module's transfer hooks, once at fit start


def graph_nodes(framework: Any, root: Path) -> list[tuple[str, str]]:
    framework.seed_everything(0)
    logger = framework.loggers.TensorBoardLogger(str(root), log_graph=True)
    model = kit(framework).Regressor()
    model.example_input_array = torch.zeros(2, 4)
    run = trainer(framework, root, logger=logger, max_epochs=1, enable_checkpointing=False)
    run.fit(model, loader(regression(16)))
    return [(node.name, node.op) for node in tensorboard_graph(Path(logger.log_dir)).node]


def test_tensorboard_graph_matches_lightnings(tmp_path):
    pytest.importorskip("tensorboard")
    lightning = pytest.importorskip("lightning.pytorch")
    ours = graph_nodes(pl, tmp_path / "ours")
    assert ("input/x", "IO Node") in ours and "aten::linear" in {op for _, op in ours}
    assert ours == graph_nodes(lightning, tmp_path / "lightning")


def test_tensorboard_log_graph_without_an_example_input_warns_in_one_line(tmp_path):
    pytest.importorskip("tensorboard")
    logger = TensorBoardLogger(tmp_path, log_graph=True)
    with pytest.warns(UserWarning, match="set `model.example_input_array`") as warned:
        fit(tmp_path, logger)
    (warning,) = [w for w in warned if "log_graph" in str(w.message)]
    assert "\n" not in str(warning.message)
    assert tensorboard_graph(Path(logger.log_dir)) is None


def test_tensorboard_log_graph_takes_an_input_for_a_model_outside_a_trainer(tmp_path):
    pytest.importorskip("tensorboard")
    logger = TensorBoardLogger(tmp_path, log_graph=True)
    logger.log_graph(BoringModel(), torch.zeros(1, 4))
    logger.finalize("success")
    assert tensorboard_graph(Path(logger.log_dir)) is not None


# ---------------------------------------------------------------------- config files


def test_a_config_may_set_log_model_checkpoint_name_and_log_graph():
    from ltrain.app.config import resolve
    from ltrain.app.errors import ConfigError

    loggers = [
        {"class_path": "WandbLogger", "init_args": {"log_model": "all", "checkpoint_name": "m"}},
        {"class_path": "MLFlowLogger", "init_args": {"log_model": True}},
        {"class_path": "TensorBoardLogger", "init_args": {"log_graph": True}},
    ]
    config = {
        "model": {"class_path": "MLPClassifier", "init_args": {"in_features": 64}},
        "data": {"class_path": "Digits"},
        "trainer": {"logger": loggers},
    }
    resolved = resolve(config).config["trainer"]["logger"]
    assert [logger["init_args"].get("log_model") for logger in resolved] == ["all", True, None]
    assert resolved[2]["init_args"]["log_graph"] is True
    loggers[0]["init_args"]["log_model"] = "some"
    with pytest.raises(ConfigError) as raised:
        resolve(config, source="c.yaml")
    assert raised.value.problems == [
        "trainer.logger.0.init_args.log_model: expected bool or one of 'all', got 'some' (c.yaml)"
    ]
