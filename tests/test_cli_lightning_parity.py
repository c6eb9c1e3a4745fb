"""Real LightningCLI is the judge of `ltrain.cli.LightningCLI`.

One `main.py`, written for Lightning 2.6 as its docs write one (a linked argument, several
`--config` files, optimizer and lr_scheduler blocks, callbacks lists, `seed_everything`,
`ckpt_path`, `default_env`, `run=False`), runs under `lightning.pytorch` and, with that import
changed to `ltrain`, under ltrain, each in its own process. The `--print_config` outputs and the
saved `config.yaml`s must match key for key, and the objects built must receive the same Trainer,
model, data, optimizer and scheduler arguments. The only differences allowed are ltrain's
deliberate ones: its own class paths for Lightning's classes, and the Lightning-only arguments
ltrain accepts at their defaults but does not print (signatures.json's `lightning` section).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml

pytest.importorskip("lightning", reason="the parity tests need lightning (dev extra)")

pytestmark = pytest.mark.xdist_group("lightning_cli_parity")

ROOT = Path(__file__).resolve().parent.parent

MAIN = '''
import json
import os

import torch
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

import lightning.pytorch as pl
from lightning.pytorch.cli import LightningCLI


class Model(pl.LightningModule):
    def __init__(self, hidden: int = 8, lr: float = 0.1, num_classes: int = 2):
        super().__init__()
        self.save_hyperparameters()
        self.net = torch.nn.Sequential(torch.nn.Linear(4, hidden), torch.nn.Linear(hidden, 1))

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = F.mse_loss(self.net(x), y)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_loss", F.mse_loss(self.net(x), y))


class Data(pl.LightningDataModule):
    def __init__(self, batch_size: int = 8, num_classes: int = 3):
        super().__init__()
        self.batch_size, self.num_classes = batch_size, num_classes

    def _loader(self):
        x = torch.randn(32, 4, generator=torch.Generator().manual_seed(0))
        return DataLoader(TensorDataset(x, x.sum(1, keepdim=True)), batch_size=self.batch_size)

    def train_dataloader(self):
        return self._loader()

    def val_dataloader(self):
        return self._loader()


def built(cli):
    """What reached the objects, in terms both frameworks share."""
    optimizers = cli.model.configure_optimizers()
    optimizer, scheduler = optimizers if isinstance(optimizers, tuple) else (optimizers, None)
    optimizer = optimizer[0] if isinstance(optimizer, list) else optimizer
    scheduler = scheduler[0] if isinstance(scheduler, list) else scheduler
    trainer = cli.trainer
    return {
        "trainer": {
            "max_epochs": trainer.max_epochs,
            "callbacks": sorted(
                [type(c).__name__, getattr(c, "monitor", None), getattr(c, "patience", None)]
                for c in trainer.callbacks
            ),
        },
        "model": {k: v for k, v in cli.model.hparams.items() if not k.startswith("_")},
        "data": {"batch_size": cli.datamodule.batch_size, "num_classes": cli.datamodule.num_classes},
        "optimizer": [type(optimizer).__name__, optimizer.defaults["lr"]],
        "lr_scheduler": scheduler and [type(scheduler).__name__, scheduler.step_size],
        "seed": os.environ.get("PL_GLOBAL_SEED"),
    }


class CLI(LightningCLI):
    def add_arguments_to_parser(self, parser):
        parser.link_arguments("data.num_classes", "model.num_classes")

    def before_fit(self):
        self.before = built(self)

    def after_validate(self):
        model = {k: v for k, v in self.model.hparams.items() if not k.startswith("_")}
        loss = round(float(self.trainer.callback_metrics["val_loss"]), 6)
        print(json.dumps({"model": model, "val_loss": loss}))

    def after_fit(self):
        print(json.dumps({**self.before, "epoch": self.trainer.current_epoch,
                          "log_dir": os.path.relpath(self.trainer.log_dir)}))


class ParserMethodsCLI(LightningCLI):
    def add_arguments_to_parser(self, parser):
        parser.add_lightning_class_args(pl.callbacks.EarlyStopping, "early_stopping")
        parser.set_defaults({"early_stopping.monitor": "val_loss", "early_stopping.patience": 5})
        parser.add_optimizer_args(torch.optim.Adam)
        parser.add_lr_scheduler_args(torch.optim.lr_scheduler.ExponentialLR)
        parser.link_arguments("data.batch_size", "model.hidden", compute_fn=lambda b: b * 2)


if __name__ == "__main__":
    mode = os.environ["MODE"]
    if mode == "script":
        CLI(Model, Data)
    elif mode == "env":
        CLI(Model, Data, parser_kwargs={"default_env": True})
    elif mode == "parser_methods":
        ParserMethodsCLI(Model, Data)
    elif mode == "subclass":
        LightningCLI()
    elif mode == "run_false":
        cli = CLI(Model, Data, run=False, seed_everything_default=3,
                  trainer_defaults={"max_epochs": 5})
        print(json.dumps(built(cli)))
'''

BASE = """\
seed_everything: 7
trainer:
  max_epochs: 3
  enable_progress_bar: false
  enable_model_summary: false
  callbacks:
  - class_path: lightning.pytorch.callbacks.EarlyStopping
    init_args:
      monitor: val_loss
      patience: 2
  - class_path: lightning.pytorch.callbacks.ModelCheckpoint
    init_args:
      monitor: val_loss
model:
  hidden: 16
data:
  batch_size: 4
  num_classes: 5
optimizer:
  class_path: torch.optim.SGD
  init_args:
    lr: 0.05
    momentum: 0.9
lr_scheduler:
  class_path: torch.optim.lr_scheduler.StepLR
  init_args:
    step_size: 1
"""

EXPERIMENT = """\
trainer:
  max_epochs: 2
  callbacks:
  - class_path: EarlyStopping
    init_args:
      monitor: val_loss
      patience: 1
model:
  hidden: 12
"""

TWO_CONFIGS = ["--config", "base.yaml", "--config", "exp.yaml"]
# (mode, command line, environment) per scenario
SCENARIOS = {
    "print_two_configs_and_flags": (
        "script",
        [
            "fit",
            *TWO_CONFIGS,
            "--model.lr",
            "1e-3",
            "--trainer.callbacks+=LearningRateMonitor",
            "--data.batch_size=16",
            "--ckpt_path=last",
            "--print_config",
        ],
        {},
    ),
    "print_seed_true_and_skip_null": (
        "script",
        ["fit", "--config", "base.yaml", "--seed_everything=true", "--print_config=skip_null"],
        {},
    ),
    "print_subclass_mode_short_names": (
        "subclass",
        [
            "fit",
            "--model=Model",
            "--data=Data",
            "--config=arguments.yaml",  # init args only: for the classes named before
            "--optimizer=Adam",
            "--optimizer.lr=0.01",
            "--lr_scheduler=StepLR",
            "--lr_scheduler.step_size=3",
            "--trainer.callbacks+=EarlyStopping",
            "--trainer.callbacks.monitor=val_loss",
            "--print_config",
        ],
        {},
    ),
    "print_default_env": (
        "env",
        [
            "fit",
            "--config",
            "base.yaml",
            "--lr_scheduler=ReduceLROnPlateau",  # step_size goes: the new class does not take it
            "--lr_scheduler.monitor=val_loss",
            "--print_config",
        ],
        {"PL_FIT__TRAINER__MAX_EPOCHS": "4", "PL_FIT__MODEL__LR": "0.5"},
    ),
    "print_parser_methods": (
        "parser_methods",
        ["fit", "--lr_scheduler.gamma=0.5", "--data.batch_size=3", "--print_config"],
        {},
    ),
    "fit": ("script", ["fit", *TWO_CONFIGS, "--model.lr", "1e-3"], {}),
    # after fit: {checkpoint} is the checkpoint it saved; the model is built as it was trained,
    # but --print_config shows the config as given
    "validate_from_checkpoint": (
        "script",
        ["validate", *TWO_CONFIGS, "--model.hidden=3", "--ckpt_path={checkpoint}"],
        {},
    ),
    "print_validate_from_checkpoint": (
        "script",
        [
            "validate",
            *TWO_CONFIGS,
            "--model.hidden=3",
            "--ckpt_path={checkpoint}",
            "--print_config",
        ],
        {},
    ),
    "run_false": (
        "run_false",
        ["--model.hidden=3", "--data.num_classes=9", "--optimizer=Adam"],
        {},
    ),
}


def run_all(framework: str, folder: Path) -> dict[str, subprocess.CompletedProcess]:
    folder.mkdir()
    source = MAIN if framework == "lightning" else MAIN.replace("lightning.pytorch", "ltrain")
    (folder / "main.py").write_text(source)
    (folder / "base.yaml").write_text(BASE)
    (folder / "exp.yaml").write_text(EXPERIMENT)
    (folder / "arguments.yaml").write_text("model: {hidden: 6}\ndata: {batch_size: 2}\n")
    results = {}
    for name, (mode, args, env) in SCENARIOS.items():
        environment = {**os.environ, "MODE": mode, "PYTHONPATH": str(ROOT), **env}
        environment.pop("PL_GLOBAL_SEED", None)
        found = sorted(folder.glob("lightning_logs/version_0/checkpoints/*.ckpt"))
        checkpoint = found[0].relative_to(folder) if found else None
        args = [arg.format(checkpoint=checkpoint) for arg in args]
        results[name] = subprocess.run(
            [sys.executable, "main.py", *args],
            cwd=folder,
            env=environment,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert results[name].returncode == 0, (framework, name, results[name].stderr[-3000:])
    return results


@pytest.fixture(scope="module")
def outputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("lightning_cli_parity")
    with ThreadPoolExecutor(2) as pool:
        runs = {fw: pool.submit(run_all, fw, root / fw) for fw in ("lightning", "ltrain")}
        return {fw: (run.result(), root / fw) for fw, run in runs.items()}


# keys that hold a class's arguments without a class_path: the class they are owned by
GROUPS = {"trainer": "trainer", "early_stopping": "EarlyStopping"}


def lightning_only() -> dict[str, dict[str, object]]:
    """Lightning's arguments ltrain accepts at their defaults, by the key they print under."""
    from ltrain.app.signatures import DATA_FILE

    defaults = json.loads(DATA_FILE.read_text())["lightning"]["defaults"]
    trainer = dict(defaults["ltrain.trainer.trainer.Trainer"])
    trainer.pop("precision")  # both print it: Lightning its null default, ltrain what it means
    # a class that has all of Lightning's arguments has no entry
    return {
        "trainer": trainer,
        "": defaults.get("ltrain.trainer.trainer.Trainer.fit", {}),
        "EarlyStopping": defaults.get("ltrain.callbacks.early_stopping.EarlyStopping", {}),
        "LearningRateMonitor": defaults.get("ltrain.callbacks.lr_monitor.LearningRateMonitor", {}),
        "ModelCheckpoint": defaults.get("ltrain.callbacks.model_checkpoint.ModelCheckpoint", {}),
    }


def comparable(config: dict, framework: str) -> dict:
    """A printed config with Lightning's class paths as their short names, Lightning-only
    arguments checked to be at their defaults and removed, and precision's null resolved (ltrain
    prints the precision it means)."""
    only = lightning_only()

    def walk(node, owner):
        if isinstance(node, list):
            return [walk(item, owner) for item in node]
        if not isinstance(node, dict):
            return node
        node = dict(node)
        if "class_path" in node:
            module, _, name = node["class_path"].rpartition(".")
            if module.startswith(("lightning.pytorch", "ltrain")):
                node["class_path"] = name
            owner = name
        if framework == "lightning":
            for key, default in only.get(owner, {}).items():
                if key in node:
                    assert node.pop(key) == default, (owner, key)
        return {k: walk(v, GROUPS.get(k, owner)) for k, v in node.items()}

    config = walk(config, "")
    if framework == "lightning" and config.get("trainer", {}).get("precision") is None:
        config["trainer"]["precision"] = "32-true"  # skip_null leaves Lightning's out
    return config


def printed(outputs, framework: str, scenario: str) -> dict:
    results, _ = outputs[framework]
    text = results[scenario].stdout
    header = {"lightning": "# lightning.pytorch==", "ltrain": "# ltrain=="}[framework]
    assert text.startswith(header), text[:200]
    return yaml.safe_load(text)


@pytest.mark.parametrize("scenario", [name for name in SCENARIOS if name.startswith("print_")])
def test_print_config_matches_lightningcli_key_for_key(outputs, scenario):
    expected = comparable(printed(outputs, "lightning", scenario), "lightning")
    got = comparable(printed(outputs, "ltrain", scenario), "ltrain")
    assert got == expected
    assert json.dumps(got, sort_keys=True) == json.dumps(expected, sort_keys=True)  # 0 vs 0.0


def test_lightnings_print_config_output_reads_back_into_ltrain(outputs):
    _, folder = outputs["ltrain"]
    (folder / "printed.yaml").write_text(
        outputs["lightning"][0]["print_two_configs_and_flags"].stdout
    )
    again = subprocess.run(
        [sys.executable, "main.py", "fit", "--config", "printed.yaml", "--print_config"],
        cwd=folder,
        env={**os.environ, "MODE": "script", "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
    )
    assert again.returncode == 0, again.stderr
    assert again.stdout == outputs["ltrain"][0]["print_two_configs_and_flags"].stdout


def test_fit_builds_the_same_objects_and_saves_the_same_config(outputs):
    runs = {}
    for framework, (results, folder) in outputs.items():
        runs[framework] = json.loads(results["fit"].stdout.strip().splitlines()[-1])
        saved = yaml.safe_load((folder / runs[framework]["log_dir"] / "config.yaml").read_text())
        runs[framework]["saved"] = comparable(saved, framework)
    assert runs["ltrain"] == runs["lightning"]
    assert runs["ltrain"]["log_dir"] == "lightning_logs/version_0"
    assert runs["ltrain"]["model"] == {"hidden": 12, "lr": 0.001, "num_classes": 5}
    assert runs["ltrain"]["optimizer"] == ["SGD", 0.05] and runs["ltrain"]["seed"] == "7"
    assert (outputs["ltrain"][1] / "lightning_logs/version_0/run.json").is_file()


def test_validate_builds_the_model_the_checkpoint_was_trained_as(outputs):
    validated = {
        fw: json.loads(results["validate_from_checkpoint"].stdout.strip().splitlines()[-1])
        for fw, (results, _) in outputs.items()
    }
    assert validated["ltrain"] == validated["lightning"]
    assert validated["ltrain"]["model"] == {"hidden": 12, "lr": 0.001, "num_classes": 5}  # fit's


def test_run_false_builds_the_same_objects_and_runs_nothing(outputs):
    built = {
        fw: json.loads(results["run_false"].stdout.strip().splitlines()[-1])
        for fw, (results, _) in outputs.items()
    }
    # with rich installed Lightning's default bar and summary are the rich ones; ltrain's stay
    # TQDMProgressBar and ModelSummary (README, "Differences from Lightning")
    ours = {"RichProgressBar": "TQDMProgressBar", "RichModelSummary": "ModelSummary"}
    callbacks = built["lightning"]["trainer"]["callbacks"]
    built["lightning"]["trainer"]["callbacks"] = sorted(
        [ours.get(name, name), *rest] for name, *rest in callbacks
    )
    assert built["ltrain"] == built["lightning"]
    assert built["ltrain"]["model"] == {"hidden": 3, "lr": 0.1, "num_classes": 9}
    assert built["ltrain"]["trainer"]["max_epochs"] == 5 and built["ltrain"]["seed"] == "3"
    versions = sorted(p.name for p in (outputs["ltrain"][1] / "lightning_logs").iterdir())
    assert versions == ["version_0", "version_1"]  # fit's and validate's
