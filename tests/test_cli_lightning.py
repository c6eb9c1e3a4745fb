"""The `ltrain` command with configs and flags written for LightningCLI.

Several `--config` files merge as jsonargparse merges them, dotted flags apply in the order typed,
`--print_config` prints what LightningCLI prints and reads it back, and a LightningCLI config runs
into the usual run folder. Every bad input in these forms is one line naming the key and where
it came from, exit code 2, nothing written. Real LightningCLI is compared in
test_cli_lightning_parity.py; here the behaviour a user relies on is pinned directly.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml
from click.testing import CliRunner

from ltrain.app.cli import main

MODELS = """
import torch
from torch.nn import functional as F

import ltrain as pl
from ltrain.data import TensorLoader


class Regressor(pl.LightningModule):
    def __init__(self, features: int = 4, hidden: int = 8, lr: float = 0.1):
        super().__init__()
        self.save_hyperparameters()
        self.net = torch.nn.Sequential(
            torch.nn.Linear(features, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, 1)
        )

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = F.mse_loss(self.net(x), y)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_loss", F.mse_loss(self.net(x), y))


class Deep(Regressor):
    def __init__(self, depth: int = 2, lr: float = 0.1):
        super().__init__(lr=lr)


class WithOwnOptimizer(Regressor):
    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)


class Data(pl.LightningDataModule):
    def __init__(self, batch_size: int = 8, samples: int = 64):
        super().__init__()
        self.batch_size, self.samples = batch_size, samples

    def _loader(self, seed):
        x = torch.randn(self.samples, 4, generator=torch.Generator().manual_seed(seed))
        return TensorLoader(x, x.sum(1, keepdim=True), batch_size=self.batch_size)

    def train_dataloader(self):
        return self._loader(0)

    def val_dataloader(self):
        return self._loader(1)
"""

# as Lightning 2.6's `--print_config` writes it: every Trainer argument, Lightning's own among them
PRINTED_BY_LIGHTNING = """\
# lightning.pytorch==2.6.6
seed_everything: 7
trainer:
  accelerator: cpu
  strategy: auto
  devices: auto
  num_nodes: 1
  precision: null
  logger: null
  callbacks:
  - class_path: lightning.pytorch.callbacks.EarlyStopping
    init_args:
      monitor: val_loss
      min_delta: 0.0
      patience: 3
      verbose: false
      mode: min
      strict: true
      check_finite: true
      stopping_threshold: null
      divergence_threshold: null
      check_on_train_epoch_end: null
      log_rank_zero_only: false
  - class_path: lightning.pytorch.callbacks.ModelCheckpoint
    init_args:
      dirpath: null
      filename: null
      monitor: val_loss
      verbose: false
      save_last: true
      save_top_k: 1
      save_on_exception: false
      save_weights_only: false
      mode: min
      auto_insert_metric_name: true
      every_n_train_steps: null
      train_time_interval: null
      every_n_epochs: null
      save_on_train_epoch_end: null
      enable_version_counter: true
  fast_dev_run: false
  max_epochs: 2
  min_epochs: null
  max_steps: -1
  min_steps: null
  max_time: null
  limit_train_batches: null
  limit_val_batches: null
  limit_test_batches: null
  limit_predict_batches: null
  overfit_batches: 0.0
  val_check_interval: null
  check_val_every_n_epoch: 1
  num_sanity_val_steps: null
  log_every_n_steps: 2
  enable_checkpointing: null
  enable_progress_bar: false
  enable_model_summary: false
  accumulate_grad_batches: 1
  gradient_clip_val: null
  gradient_clip_algorithm: null
  deterministic: null
  benchmark: null
  inference_mode: true
  use_distributed_sampler: true
  profiler: null
  detect_anomaly: false
  barebones: false
  plugins: null
  sync_batchnorm: false
  reload_dataloaders_every_n_epochs: 0
  default_root_dir: null
  enable_autolog_hparams: true
  model_registry: null
model:
  class_path: models.Regressor
  init_args:
    features: 4
    hidden: 16
    lr: 0.1
data:
  class_path: models.Data
  init_args:
    batch_size: 16
    samples: 64
optimizer:
  class_path: torch.optim.SGD
  init_args:
    lr: 0.05
    momentum: 0.9
    dampening: 0.0
    weight_decay: 0.0
    nesterov: false
    maximize: false
    foreach: null
    differentiable: false
    fused: null
lr_scheduler:
  class_path: torch.optim.lr_scheduler.StepLR
  init_args:
    step_size: 1
    gamma: 0.5
    last_epoch: -1
ckpt_path: null
weights_only: null
"""

BASE = {
    "seed_everything": 3,
    "model": {"class_path": "models.Regressor", "init_args": {"hidden": 16, "lr": 0.2}},
    "data": {"class_path": "models.Data", "init_args": {"batch_size": 16}},
    "optimizer": "Adam",
    "trainer": {
        "max_epochs": 2,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "callbacks": [{"class_path": "EarlyStopping", "init_args": {"monitor": "val_loss"}}],
    },
}


def invoke(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def resolved(*args: str) -> dict:
    """`ltrain config ARGS`, read back."""
    result = invoke("config", *args)
    assert result.exit_code == 0, result.output
    return yaml.safe_load(result.output)


def printed(*args: str) -> dict:
    """`ltrain fit ARGS --print_config`, read back."""
    result = invoke("fit", *args, "--print_config")
    assert result.exit_code == 0, result.output
    return yaml.safe_load(result.output)


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "models.py").write_text(MODELS)
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(BASE))
    (tmp_path / "printed.yaml").write_text(PRINTED_BY_LIGHTNING)
    yield tmp_path
    sys.modules.pop("models", None)


def write(name: str, config: dict) -> str:
    Path(name).write_text(yaml.safe_dump(config))
    return name


# ---------------------------------------------------------------------- reading LightningCLI's configs
def test_lightnings_print_config_output_loads_with_its_classes_as_ltrains(workdir):
    config = resolved("--config", "printed.yaml")
    assert config["seed"] == 7
    callbacks = config["trainer"]["callbacks"]
    assert [c["class_path"] for c in callbacks] == [
        "ltrain.callbacks.early_stopping.EarlyStopping",
        "ltrain.callbacks.model_checkpoint.ModelCheckpoint",
    ]
    assert "log_rank_zero_only" not in callbacks[0]["init_args"]  # Lightning's, at its default
    assert config["trainer"]["max_time"] is None  # an argument ltrain has, at Lightning's default
    assert config["trainer"]["precision"] == "32-true"  # Lightning's null: the default
    assert config["optimizer"]["init_args"]["momentum"] == 0.9
    assert config["lr_scheduler"]["class_path"] == "torch.optim.lr_scheduler.StepLR"


def test_print_config_feeds_back_unchanged(workdir):
    first = invoke("fit", "--config", "printed.yaml", "--model.lr", "1e-3", "--print_config")
    assert first.exit_code == 0, first.output
    assert first.output.startswith("# ltrain==")
    Path("again.yaml").write_text(first.output)
    second = invoke("fit", "--config", "again.yaml", "--print_config")
    assert second.output == first.output
    shown = yaml.safe_load(first.output)
    assert list(shown) == [
        "seed_everything",
        "trainer",
        "model",
        "data",
        "optimizer",
        "lr_scheduler",
        "ckpt_path",
    ]
    assert shown["model"]["init_args"]["lr"] == 0.001
    assert shown["trainer"]["callbacks"][0]["class_path"] == "ltrain.callbacks.EarlyStopping"
    assert shown["optimizer"]["class_path"] == "torch.optim.SGD"


def test_print_config_skip_null_leaves_out_null_values(workdir):
    shown = printed("--config", "base.yaml")
    skipped = yaml.safe_load(
        invoke("fit", "--config", "base.yaml", "--print_config=skip_null").output
    )
    assert shown["lr_scheduler"] is None and "lr_scheduler" not in skipped
    assert "min_epochs" not in skipped["trainer"] and skipped["trainer"]["max_epochs"] == 2


def test_ltrain_config_shows_ltrains_own_view_of_a_lightning_config(workdir):
    config = resolved("--config", "base.yaml")
    assert list(config)[:5] == ["name", "seed", "model", "data", "trainer"]
    assert config["seed"] == 3 and "seed_everything" not in config
    Path("view.yaml").write_text(invoke("config", "--config", "base.yaml").output)
    assert resolved("view.yaml") == config


# ---------------------------------------------------------------------- several sources
def test_later_config_files_win_mappings_merge_and_lists_are_replaced(workdir):
    write(
        "exp.yaml",
        {
            "model": {"init_args": {"lr": 0.5}},
            "trainer": {
                "max_epochs": 4,
                "callbacks": [{"class_path": "ModelCheckpoint", "init_args": {"save_last": True}}],
            },
        },
    )
    config = resolved("--config", "base.yaml", "--config", "exp.yaml")
    assert config["model"]["init_args"]["hidden"] == 16  # from base.yaml
    assert config["model"]["init_args"]["lr"] == 0.5  # exp.yaml wins
    assert config["trainer"]["max_epochs"] == 4
    assert config["trainer"]["enable_progress_bar"] is False
    callbacks = config["trainer"]["callbacks"]
    assert [c["class_path"].rpartition(".")[2] for c in callbacks] == ["ModelCheckpoint"]


def test_a_new_class_path_keeps_the_arguments_the_new_class_takes(workdir):
    write("deep.yaml", {"model": {"class_path": "models.Deep", "init_args": {"depth": 3}}})
    by_file = resolved("--config", "base.yaml", "--config", "deep.yaml")["model"]
    assert by_file == {"class_path": "models.Deep", "init_args": {"depth": 3, "lr": 0.2}}
    by_flag = resolved("--config", "base.yaml", "--model=Deep")["model"]  # a loaded subclass's name
    assert by_flag == {"class_path": "models.Deep", "init_args": {"depth": 2, "lr": 0.2}}


def test_flags_apply_in_the_order_typed_and_set_applies_last(workdir):
    before = resolved("--trainer.max_epochs=9", "--config", "base.yaml")
    assert before["trainer"]["max_epochs"] == 2  # the file came later
    after = resolved("--config", "base.yaml", "--trainer.max_epochs", "9", "--model.lr", "1e-3")
    assert after["trainer"]["max_epochs"] == 9
    assert after["model"]["init_args"]["lr"] == 0.001
    both = resolved("base.yaml", "--trainer.max_epochs=9", "--set", "trainer.max_epochs=5")
    assert both["trainer"]["max_epochs"] == 5


def test_callbacks_append_and_a_flag_without_an_index_sets_the_last_one(workdir):
    config = resolved(
        "--config",
        "base.yaml",
        "--trainer.callbacks+=LearningRateMonitor",
        "--trainer.callbacks.logging_interval=step",
        "--trainer.callbacks+={class_path: ModelCheckpoint, init_args: {save_last: true}}",
        "--trainer.callbacks.0.patience=9",
    )
    callbacks = config["trainer"]["callbacks"]
    assert [c["class_path"].rpartition(".")[2] for c in callbacks] == [
        "EarlyStopping",
        "LearningRateMonitor",
        "ModelCheckpoint",
    ]
    assert callbacks[0]["init_args"]["patience"] == 9
    assert callbacks[1]["init_args"]["logging_interval"] == "step"
    assert callbacks[2]["init_args"]["save_last"] is True


def test_issue_15_callbacks_resolve_by_their_lightning_names(workdir):
    config = resolved(
        "--config",
        "base.yaml",
        "--trainer.callbacks+=StochasticWeightAveraging",
        "--trainer.callbacks.swa_lrs=0.05",
        "--trainer.callbacks+=lightning.pytorch.callbacks.EMAWeightAveraging",
        "--trainer.callbacks+=DeviceStatsMonitor",
        "--trainer.callbacks+=WeightAveraging",
    )
    callbacks = config["trainer"]["callbacks"]
    assert [c["class_path"].rpartition(".")[2] for c in callbacks[1:]] == [
        name
        for name in (
            "StochasticWeightAveraging",
            "EMAWeightAveraging",
            "DeviceStatsMonitor",
            "WeightAveraging",
        )
    ]
    assert callbacks[1]["init_args"]["swa_lrs"] == 0.05


@pytest.mark.parametrize(
    ("flags", "key", "class_path"),
    [
        (["--optimizer=Adam"], "optimizer", "torch.optim.Adam"),
        (
            ["--optimizer=AdamW", "--lr_scheduler=CosineAnnealingLR", "--lr_scheduler.T_max=3"],
            "lr_scheduler",
            "torch.optim.lr_scheduler.CosineAnnealingLR",
        ),
        (
            [
                "--optimizer=SGD",
                "--lr_scheduler=ReduceLROnPlateau",
                "--lr_scheduler.monitor=val_loss",
            ],
            "lr_scheduler",
            "ltrain.cli.ReduceLROnPlateau",
        ),
        (
            ["--trainer.logger=TensorBoardLogger"],
            "trainer.logger",
            "ltrain.loggers.TensorBoardLogger",
        ),
        (["--data=lightning.pytorch.demos.nope.Data"], None, None),
    ],
)
def test_short_names_resolve_as_lightningcli_resolves_them(workdir, flags, key, class_path):
    result = invoke("fit", "--config", "base.yaml", *flags, "--print_config")
    if key is None:  # a Lightning class ltrain has no twin of is refused by name
        assert result.exit_code == 2
        assert "lightning.pytorch.demos.nope.Data is Lightning's" in result.stderr
        return
    assert result.exit_code == 0, result.output
    node = yaml.safe_load(result.output)
    for part in key.split("."):
        node = node[part]
    assert node["class_path"] == class_path


# ---------------------------------------------------------------------- running
def test_a_lightning_config_fits_into_the_usual_run_folder_and_resumes(workdir):
    result = invoke("fit", "--config", "printed.yaml", "--trainer.max_epochs=1")
    assert result.exit_code == 0, result.output
    folder = workdir / "runs" / "default" / "version_0"
    assert {"config.yaml", "run.json", "metrics.csv", "checkpoints"} <= {
        p.name for p in folder.iterdir()
    }
    saved = yaml.safe_load((folder / "config.yaml").read_text())
    assert saved["seed"] == 7 and saved["optimizer"]["init_args"]["lr"] == 0.05
    assert json.loads((folder / "run.json").read_text())["state"] == "finished"
    table = invoke("runs", "--csv")
    assert "default" in table.output and "finished" in table.output

    resumed = invoke(
        "fit", "--config", "printed.yaml", "--trainer.max_epochs=2", "--resume", "last"
    )
    assert resumed.exit_code == 0, resumed.output
    assert sorted(pd.read_csv(folder / "metrics.csv")["epoch"].dropna().unique()) == [0, 1]
    assert not (folder.parent / "version_1").exists()


def test_seed_everything_true_seeds_as_lightning_does_and_records_the_seed(workdir, monkeypatch):
    write("seeded.yaml", {**BASE, "seed_everything": True})
    monkeypatch.setenv("PL_GLOBAL_SEED", "5")  # Lightning 2.6 takes it from here, else 0
    result = invoke("fit", "--config", "seeded.yaml", "--trainer.max_epochs=1")
    assert result.exit_code == 0, result.output
    assert "Seed set to 5" in result.output
    saved = yaml.safe_load((workdir / "runs/default/version_0/config.yaml").read_text())
    assert saved["seed"] == 5


def test_ckpt_path_in_the_config_resumes_like_resume(workdir):
    assert invoke("fit", "--config", "base.yaml", "--trainer.max_epochs=1").exit_code == 0
    last = workdir / "runs/default/version_0/checkpoints"
    checkpoint = next(last.glob("*.ckpt"))
    result = invoke(
        "fit", "--config", "base.yaml", "--trainer.max_epochs=2", f"--ckpt_path={checkpoint}"
    )
    assert result.exit_code == 0, result.output
    epochs = pd.read_csv(workdir / "runs/default/version_0/metrics.csv")["epoch"].dropna()
    assert sorted(epochs.unique()) == [0, 1]


def test_the_optimizer_block_replaces_configure_optimizers_with_lightnings_warning(workdir):
    from ltrain.app.config import load
    from ltrain.app.optimizers import attach_optimizers
    from ltrain.app.sources import parse_arguments

    args = ["--config", "printed.yaml", "--model=WithOwnOptimizer", "--optimizer.lr=0.3"]
    config = load(parse_arguments(args, positional=False))[0].config
    import models

    model = models.WithOwnOptimizer(**config["model"]["init_args"])
    with pytest.warns(UserWarning, match="WithOwnOptimizer.configure_optimizers` will be overr"):
        attach_optimizers(model, config["optimizer"], config["lr_scheduler"])
    (optimizer,), (scheduler,) = model.configure_optimizers()
    assert isinstance(optimizer, torch.optim.SGD) and optimizer.defaults["lr"] == 0.3
    assert optimizer.defaults["momentum"] == 0.9
    assert isinstance(scheduler, torch.optim.lr_scheduler.StepLR) and scheduler.gamma == 0.5


# ---------------------------------------------------------------------- bad input
BROKEN = [
    # (arguments after `ltrain fit`, words the one line must contain)
    (
        ["--config", "base.yaml", "--trainer.max_epoch=3"],
        ["trainer.max_epoch", "did you mean 'max_epochs'", "(--trainer.max_epoch=3)"],
    ),
    (
        ["--config", "base.yaml", "--max_epochs", "3"],
        ["max_epochs", "'trainer.max_epochs'", "(--max_epochs 3)"],
    ),
    (
        ["--config", "base.yaml", "--trainer.max_epochs=three"],
        ["trainer.max_epochs", "expected int", "(--trainer.max_epochs=three)"],
    ),
    (["--config", "missing.yaml"], ["--config missing.yaml", "no such config file"]),
    (
        ["--config", "base.yaml", "--config", "seed.yaml"],
        ["seed_everything", "same setting as seed", "(base.yaml)"],
    ),
    (
        ["--config", "base.yaml", "--data.hidden=3"],
        ["data.init_args.hidden", "unknown key", "(--data.hidden=3)"],
    ),
    (
        [
            "--config",
            "base.yaml",
            "--trainer.callbacks+=ModelCheckpoint",
            "--trainer.callbacks.patience=2",
        ],
        [
            "trainer.callbacks.1.init_args.patience",
            "unknown key",
            "(--trainer.callbacks.patience=2)",
        ],
    ),
    (
        ["--config", "base.yaml", "--trainer.enable_autolog_hparams=false"],
        [
            "trainer.enable_autolog_hparams",
            "Lightning's Trainer",
            "(--trainer.enable_autolog_hparams=false)",
        ],
    ),
    (
        ["--config", "base.yaml", "--trainer.callbacks+=ModelPruning"],
        ["trainer.callbacks.1.class_path", "Lightning callback that ltrain does not have"],
    ),
    (
        [
            "--config",
            "base.yaml",
            "--optimizer=null",
            "--lr_scheduler=StepLR",
            "--lr_scheduler.step_size=1",
        ],
        ["lr_scheduler", "without an optimizer", "(--lr_scheduler=StepLR)"],
    ),
    (
        ["--config", "base.yaml", "--optimizer=Adam", "--optimizer.params=1"],
        ["optimizer.init_args.params", "passes this argument itself"],
    ),
    (["--config", "base.yaml", "--trainer.logger.save_dir=x"], ["trainer.logger", "expected bool"]),
    (
        ["--config", "base.yaml", "--trainer.callbacks=[]", "--trainer.callbacks.patience=1"],
        ["trainer.callbacks is empty", "--trainer.callbacks.patience=1"],
    ),
    (["--config", "base.yaml", "--model.lr"], ["--model.lr", "expected a value"]),
    (["--config", "base.yaml", "-x"], ["-x", "unknown option"]),
    (["--config", "base.yaml", "stray"], ["stray", "unexpected argument"]),
    (["--config", "base.yaml", "--print_config=comments"], ["--print_config", "comments"]),
    (["--trainer.max_epochs=3"], ["CONFIG", "--config FILE"]),
]


@pytest.mark.parametrize(
    ("args", "words"), BROKEN, ids=[" ".join(b[0][2:]) or "none" for b in BROKEN]
)
def test_bad_input_is_one_line_naming_key_and_source_exit_2_nothing_written(workdir, args, words):
    write("seed.yaml", {"seed": 1})
    result = CliRunner().invoke(main, ["fit", *args])
    assert result.exit_code == 2, result.output
    errors = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(errors) == 1, result.stderr
    assert "Traceback" not in result.output + result.stderr
    for word in words:
        assert word in errors[0], errors[0]
    assert not (workdir / "runs").exists()


def test_print_config_belongs_to_the_lightningcli_subcommands(workdir):
    result = CliRunner().invoke(main, ["config", "--config", "base.yaml", "--print_config"])
    assert result.exit_code == 2
    assert "`ltrain config` prints ltrain's view" in result.stderr


def test_print_config_of_builtin_classes_does_not_import_torch(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text(
        "seed_everything: 1\nmodel: {class_path: lightning.pytorch.demos.x.Nope}\n".replace(
            "lightning.pytorch.demos.x.Nope", "MLPClassifier"
        )
        + "trainer:\n  callbacks:\n  - class_path: lightning.pytorch.callbacks.EarlyStopping\n"
        "    init_args: {monitor: valid_loss, log_rank_zero_only: false}\n  max_time: null\n"
    )
    code = (
        "import sys\n"
        "from ltrain.app.cli import main\n"
        "try:\n"
        f"    main(['fit', '--config', {str(config)!r}, '--trainer.max_epochs=3', '--print_config'])\n"
        "except SystemExit as stop:\n"
        "    assert stop.code == 0, stop.code\n"
        "print('torch' in sys.modules, file=sys.stderr)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stderr.strip().splitlines()[-1] == "False", out.stderr
    assert yaml.safe_load(out.stdout)["trainer"]["max_epochs"] == 3
