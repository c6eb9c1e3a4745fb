"""`from ltrain.cli import LightningCLI`: a LightningCLI script with its import changed.

The classes below are a user's, written against `import ltrain as pl`. Each test builds the CLI
with `args=` as a script's command line would give them; `run=False` builds the objects only.
What Lightning itself makes of the same inputs is compared in test_cli_lightning_parity.py.
"""

from __future__ import annotations

import pytest
import torch
import yaml
from click.testing import CliRunner
from torch.nn import functional as F

import ltrain as pl
from ltrain.app.cli import main as ltrain_command
from ltrain.callbacks import EarlyStopping, LearningRateMonitor
from ltrain.cli import LightningCLI, ReduceLROnPlateau
from ltrain.data import TensorLoader


class CliModel(pl.LightningModule):
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

    def test_step(self, batch, batch_idx):
        x, y = batch
        self.log("test_loss", F.mse_loss(self.net(x), y))


class CliData(pl.LightningDataModule):
    def __init__(self, batch_size: int = 8, num_classes: int = 3):
        super().__init__()
        self.batch_size, self.num_classes = batch_size, num_classes

    def _loader(self):
        x = torch.randn(32, 4, generator=torch.Generator().manual_seed(0))
        return TensorLoader(x, x.sum(1, keepdim=True), batch_size=self.batch_size)

    def train_dataloader(self):
        return self._loader()

    def val_dataloader(self):
        return self._loader()

    def test_dataloader(self):
        return self._loader()


class LinkedCLI(LightningCLI):
    """The docs' example: the data module decides the number of classes."""

    def add_arguments_to_parser(self, parser):
        parser.link_arguments("data.num_classes", "model.num_classes")


class CountedCLI(LinkedCLI):
    calls: list[str] = []

    def before_fit(self):
        self.calls.append("before_fit")

    def after_fit(self):
        self.calls.append("after_fit")


QUIET = ["--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]


@pytest.fixture(autouse=True)
def workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("PL_GLOBAL_SEED", raising=False)
    return tmp_path


def test_run_false_builds_the_objects_the_config_and_flags_describe(workdir):
    (workdir / "config.yaml").write_text(
        "seed_everything: 4\n"
        "trainer:\n"
        "  max_epochs: 3\n"
        "  callbacks:\n"
        "  - class_path: lightning.pytorch.callbacks.EarlyStopping\n"
        "    init_args: {monitor: val_loss, patience: 2}\n"
        "model: {hidden: 16}\n"  # the class is the script's: its arguments only
        "data: {batch_size: 4, num_classes: 5}\n"
    )
    cli = LinkedCLI(
        CliModel, CliData, args=["--config", "config.yaml", "--model.lr", "1e-3"], run=False
    )
    assert cli.subcommand is None
    assert dict(cli.model.hparams) == {"hidden": 16, "lr": 0.001, "num_classes": 5}  # linked
    assert cli.datamodule.batch_size == 4
    assert cli.trainer.max_epochs == 3
    early = [c for c in cli.trainer.callbacks if isinstance(c, EarlyStopping)]
    assert len(early) == 1 and early[0].patience == 2
    assert cli.config.seed_everything == 4 and cli.config["trainer.max_epochs"] == 3
    assert cli.config.model == {"hidden": 16, "lr": 0.001}  # a link target is not config


def test_instantiate_links_class_arguments_and_set_defaults(workdir):
    class CLI(LightningCLI):
        def add_arguments_to_parser(self, parser):
            parser.link_arguments("data.num_classes", "model.num_classes", apply_on="instantiate")
            parser.add_lightning_class_args(LearningRateMonitor, "lr_monitor")
            parser.set_defaults({"lr_monitor.logging_interval": "epoch"})
            parser.add_optimizer_args(torch.optim.SGD)  # fixed: the config gives its arguments
            parser.add_lr_scheduler_args(torch.optim.lr_scheduler.StepLR)

    cli = CLI(
        CliModel,
        CliData,
        args=["--data.num_classes=7", "--optimizer.lr=0.3", "--lr_scheduler.step_size=2"],
        trainer_defaults={"max_epochs": 2, "callbacks": [EarlyStopping(monitor="val_loss")]},
        run=False,
    )
    assert cli.model.hparams.num_classes == 7
    monitors = [c for c in cli.trainer.callbacks if isinstance(c, LearningRateMonitor)]
    assert monitors == [cli.config_init.lr_monitor] and monitors[0].logging_interval == "epoch"
    assert any(isinstance(c, EarlyStopping) for c in cli.trainer.callbacks)
    assert cli.trainer.max_epochs == 2
    (optimizer,), (scheduler,) = cli.model.configure_optimizers()
    assert isinstance(optimizer, torch.optim.SGD) and optimizer.defaults["lr"] == 0.3
    assert isinstance(scheduler, torch.optim.lr_scheduler.StepLR) and scheduler.step_size == 2


def test_subclass_mode_takes_class_paths_and_a_plateau_scheduler_returns_its_monitor(workdir):
    cli = LightningCLI(
        args=[
            "--model=test_lightning_cli.CliModel",
            "--data=CliData",  # a loaded subclass, named as jsonargparse allows
            "--optimizer=Adam",
            "--lr_scheduler=ReduceLROnPlateau",
            "--lr_scheduler.monitor=val_loss",
        ],
        run=False,
    )
    assert type(cli.model) is CliModel and type(cli.datamodule) is CliData
    (workdir / "arguments.yaml").write_text("model: {hidden: 6}\n")
    named_first = ["--model=CliModel", "--config=arguments.yaml", "--data=CliData"]
    assert LightningCLI(args=named_first, run=False).model.hparams.hidden == 6
    configured = cli.model.configure_optimizers()
    assert isinstance(configured["optimizer"], torch.optim.Adam)
    assert isinstance(configured["lr_scheduler"]["scheduler"], ReduceLROnPlateau)
    assert configured["lr_scheduler"]["monitor"] == "val_loss"


def test_fit_runs_the_hooks_and_saves_the_config_into_the_log_dir(workdir):
    CountedCLI.calls = []
    cli = CountedCLI(
        CliModel, CliData, args=["fit", "--trainer.max_epochs=1", "--optimizer=SGD", *QUIET]
    )
    assert CountedCLI.calls == ["before_fit", "after_fit"]
    assert cli.trainer.current_epoch == 1
    saved = yaml.safe_load((workdir / "lightning_logs/version_0/config.yaml").read_text())
    assert saved["seed_everything"] == 0  # true picked one and recorded it
    assert saved["trainer"]["max_epochs"] == 1
    assert saved["optimizer"]["class_path"] == "torch.optim.SGD"
    assert "num_classes" not in saved["model"]
    assert (workdir / "lightning_logs/version_0/run.json").is_file()
    table = CliRunner().invoke(ltrain_command, ["runs", "lightning_logs", "--csv"])
    assert "finished" in table.output


def test_test_subcommand_builds_the_model_the_checkpoint_was_trained_as(workdir):
    LinkedCLI(
        CliModel,
        CliData,
        args=["fit", "--trainer.max_epochs=1", "--model.hidden=5", "--optimizer=SGD", *QUIET],
    )
    checkpoint = next((workdir / "lightning_logs/version_0/checkpoints").glob("*.ckpt"))
    cli = LinkedCLI(CliModel, CliData, args=["test", f"--ckpt_path={checkpoint}", *QUIET])
    assert cli.model.hparams.hidden == 5  # the checkpoint's, not the default 8


def test_default_env_reads_lightnings_variable_names(workdir, monkeypatch):
    monkeypatch.setenv("PL_TRAINER__MAX_EPOCHS", "3")
    monkeypatch.setenv("PL_MODEL__HIDDEN", "6")
    kwargs = {"parser_kwargs": {"default_env": True}, "run": False}
    cli = LinkedCLI(CliModel, CliData, args=["--model.lr=0.5"], **kwargs)
    assert cli.trainer.max_epochs == 3 and cli.model.hparams.hidden == 6
    assert (
        LinkedCLI(CliModel, CliData, args=["--trainer.max_epochs=4"], **kwargs).trainer.max_epochs
        == 4
    )
    unasked = LinkedCLI(CliModel, CliData, args=[], run=False)
    assert unasked.config.trainer.max_epochs is None and unasked.config.model.hidden == 8


def test_a_subcommands_variables_carry_its_name(workdir, monkeypatch, capsys):
    monkeypatch.setenv("PL_FIT__TRAINER__MAX_EPOCHS", "5")
    with pytest.raises(SystemExit) as stopped:
        LinkedCLI(
            CliModel, CliData, args=["fit", "--print_config"], parser_kwargs={"default_env": True}
        )
    assert stopped.value.code == 0
    assert yaml.safe_load(capsys.readouterr().out)["trainer"]["max_epochs"] == 5


def test_args_may_be_a_mapping(workdir):
    config = {"trainer": {"max_epochs": 2}, "model": {"hidden": 3}}
    assert LinkedCLI(CliModel, CliData, args=config, run=False).model.hparams.hidden == 3
    fit = {**config, "trainer": {"max_epochs": 1, "enable_progress_bar": False}, "optimizer": "SGD"}
    cli = LinkedCLI(CliModel, CliData, args={"fit": fit})
    assert cli.subcommand == "fit" and cli.trainer.current_epoch == 1


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (
            ["fit", "--trainer.max_epoch=3"],
            "error: trainer.max_epoch: unknown key; did you mean 'max_epochs'? (--trainer.max_epoch=3)",
        ),
        (
            ["fit", "--model.hiden=3"],
            "error: model.hiden: unknown key; did you mean 'hidden'? (--model.hiden=3)",
        ),
        (
            ["fit", "--data.batch_size=many"],
            "error: data.batch_size: expected int, got 'many' (--data.batch_size=many)",
        ),
        (
            ["fit", "--model.num_classes=4"],
            "error: model.num_classes: set by link_arguments from another key; remove it (--model.num_classes=4)",
        ),
        (["fit", "--config", "nope.yaml"], "error: --config nope.yaml: no such config file"),
        (
            ["fit", "--data.hidden=3"],
            "error: data.hidden: unknown key; valid keys: batch_size, num_classes (--data.hidden=3)",
        ),
        (
            ["fit", "--config", "linked.yaml"],
            "error: model.num_classes: set by link_arguments from another key; remove it (linked.yaml)",
        ),
        (
            ["fit", "--config", "typo.yaml"],
            "error: modle: unknown key; did you mean 'model'? (typo.yaml)",
        ),
        (
            ["fit", "--model=CliModel"],
            "error: model: the script fixes the class to CliModel; expected a mapping of its arguments (--model=CliModel)",
        ),
        (["fitt"], "error: fitt: expected a subcommand first, one of fit, validate, test, predict"),
    ],
)
def test_bad_input_exits_2_with_one_line_and_builds_nothing(workdir, capsys, args, line):
    (workdir / "linked.yaml").write_text("model: {num_classes: 3}\n")
    (workdir / "typo.yaml").write_text("trainer: {max_epochs: 2}\nmodle: {hidden: 3}\n")
    with pytest.raises(SystemExit) as stopped:
        LinkedCLI(CliModel, CliData, args=args)
    assert stopped.value.code == 2
    assert capsys.readouterr().err.splitlines() == [line]
    assert not (workdir / "lightning_logs").exists()
