"""Data-parallel training on torch.distributed, on the CPU with gloo (2 processes).

The process tests start real worker processes (a script, `ltrain fit`, torchrun); the rest checks
the pieces they rest on (strategy choice, sharding, gathering predictions) in this process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml
from boring import digits_config, needs_cuda
from torch.utils.data import DataLoader, TensorDataset

import ltrain as pl
from ltrain.batch import split_samples, stack_samples
from ltrain.data import TensorLoader
from ltrain.data.sharding import shard_loader
from ltrain.errors import MisconfigurationException
from ltrain.strategies import DDPStrategy, SingleDeviceStrategy, make_strategy
from ltrain.strategies.launcher import rerun_command

TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR")

# A script a user could write: `python train.py DEVICES ROOT [LOADER] [FAIL_AT_STEP]`.
SCRIPT = """
import sys
import torch
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset
import ltrain as pl
from ltrain.data import TensorLoader


class Net(pl.LightningModule):
    def __init__(self, fail_at=-1, fail_rank=1, how="raise"):
        super().__init__()
        self.layer = torch.nn.Linear(8, 3)
        self.fail_at, self.fail_rank, self.how = fail_at, fail_rank, how

    def training_step(self, batch, batch_idx):
        failing = self.global_step == self.fail_at and self.global_rank == self.fail_rank
        if failing and self.how == "raise":
            raise RuntimeError(f"rank {self.fail_rank} gives up")
        x, y = batch
        loss = F.cross_entropy(self.layer(x), y)
        if failing:  # how == "nan": this rank's loss diverges, the other's does not
            loss = loss * float("nan")
        self.log("loss", loss, on_step=True, on_epoch=True, sync_dist=True)
        self.log("loss_max", loss, on_step=False, on_epoch=True, sync_dist=True, reduce_fx="max")
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("valid_loss", F.cross_entropy(self.layer(x), y), sync_dist=True)

    def predict_step(self, batch, batch_idx):
        return {"label": self.layer(batch[0]).argmax(1), "index": batch[1]}

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.5)


pl.seed_everything(0)
generator = torch.Generator().manual_seed(0)
x = torch.randn(512, 8, generator=generator)
y = torch.randint(0, 3, (512,), generator=generator)
devices, root = int(sys.argv[1]), sys.argv[2]
kind = sys.argv[3] if len(sys.argv) > 3 else "tensors"
fail_at = int(sys.argv[4]) if len(sys.argv) > 4 else -1
fail_rank = int(sys.argv[5]) if len(sys.argv) > 5 else 1
how = sys.argv[6] if len(sys.argv) > 6 else "raise"
accelerator = sys.argv[7] if len(sys.argv) > 7 else "cpu"
strategy = sys.argv[8] if len(sys.argv) > 8 else ("ddp" if devices > 1 else "auto")
batch = 128 // devices
if kind == "tensors":
    train = TensorLoader(x, y, batch_size=batch, shuffle=True)
else:  # not shuffled: a DistributedSampler's own shuffle differs from a RandomSampler's
    train = DataLoader(TensorDataset(x, y), batch_size=batch)
val = DataLoader(TensorDataset(x[:100], y[:100]), batch_size=batch)
trainer = pl.Trainer(
    strategy=strategy,
    devices=devices,
    accelerator=accelerator,
    max_epochs=2,
    log_every_n_steps=1,
    enable_progress_bar=False,
    enable_model_summary=False,
    default_root_dir=root,
    callbacks=[pl.callbacks.ModelCheckpoint(monitor="valid_loss", save_last=True)],
)
trainer.fit(Net(fail_at, fail_rank, how), train, val)
order = torch.arange(53)
predictions = trainer.predict(trainer.lightning_module, TensorLoader(x[:53], order, batch_size=8))
if trainer.is_global_zero:
    torch.save(predictions, root + "/predictions.pt")
backend = torch.distributed.get_backend() if torch.distributed.is_initialized() else "none"
print(f"rank {trainer.global_rank} of {trainer.world_size} ({backend}) wrote into {trainer.log_dir}")
"""

CONFIG = digits_config(
    "ddp",
    lr=0.05,
    batch_size=32,
    accelerator="cpu",
    max_epochs=2,
    limit_train_batches=4,
    limit_val_batches=2,
    callbacks=[
        {"class_path": "ModelCheckpoint", "init_args": {"monitor": "valid_loss", "save_last": True}}
    ],
)


def _clean_environment() -> dict[str, str]:
    """This environment without a launcher's variables (a test may run under one)."""
    return {k: v for k, v in os.environ.items() if k not in (*TORCHRUN_VARIABLES, "MASTER_PORT")}


def _run(args: list[str], cwd: Path, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run(
        args, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=_clean_environment()
    )


def _train_script(
    tmp_path: Path,
    devices: int,
    kind: str = "tensors",
    fail_at: int = -1,
    fail_rank: int = 1,
    how: str = "raise",
    accelerator: str = "cpu",
    strategy: str | None = None,
    timeout: float = 240,
) -> tuple[subprocess.CompletedProcess, Path]:
    script = tmp_path / "train.py"
    script.write_text(SCRIPT)
    strategy = strategy or ("ddp" if devices > 1 else "auto")
    root = tmp_path / f"run{devices}-{kind}-{accelerator}-{strategy}"
    arguments = [str(devices), str(root), kind, str(fail_at), str(fail_rank), how]
    arguments += [accelerator, strategy]
    return _run([sys.executable, str(script), *arguments], tmp_path, timeout), root


def _metrics(root: Path) -> pd.DataFrame:
    (folder,) = (root / "lightning_logs").iterdir()
    return pd.read_csv(folder / "metrics.csv")


# ---------------------------------------------------------------------- worker processes
@pytest.mark.slow
@pytest.mark.parametrize("kind", ["tensors", "dataloader"])
def test_two_processes_of_half_batches_follow_one_process(tmp_path: Path, kind: str) -> None:
    one, one_root = _train_script(tmp_path, 1, kind)
    two, two_root = _train_script(tmp_path, 2, kind)
    assert one.returncode == 0, one.stderr[-2000:]
    assert two.returncode == 0, two.stderr[-2000:]
    assert "rank 0 of 2 (gloo)" in two.stdout and "rank 1 of 2 (gloo)" in two.stdout
    # one version folder, written once (no row twice), by rank 0
    assert [p.name for p in (two_root / "lightning_logs").iterdir()] == ["version_0"]
    single, parallel = _metrics(one_root), _metrics(two_root)
    assert list(parallel.columns) == list(single.columns)
    assert len(parallel) == len(single) == 2 * 4 + 2 * 2  # step rows, validation and epoch rows
    for column in ("loss_step", "loss_epoch", "valid_loss"):
        torch.testing.assert_close(
            torch.tensor(parallel[column].to_numpy()), torch.tensor(single[column].to_numpy()),
            equal_nan=True, rtol=1e-5, atol=1e-6,
        )  # fmt: skip
    # the epoch max is the max over both ranks' batches, not rank 0's alone
    assert parallel["loss_max"].dropna().iloc[0] >= parallel["loss_step"].iloc[:4].max() - 1e-6
    # predictions gathered on rank 0 in the data set's order, in batches of 8
    gathered = torch.load(two_root / "predictions.pt")
    alone = torch.load(one_root / "predictions.pt")
    assert [len(b["index"]) for b in gathered] == [8] * 6 + [5]
    assert torch.equal(torch.cat([b["index"] for b in gathered]), torch.arange(53))
    assert torch.equal(
        torch.cat([b["label"] for b in gathered]), torch.cat([b["label"] for b in alone])
    )
    # the DDP checkpoint loads into a plain module: no `module.` prefix
    (folder,) = (two_root / "lightning_logs").iterdir()
    state = torch.load(folder / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    assert sorted(state) == ["layer.bias", "layer.weight"]


@pytest.mark.slow
@needs_cuda
def test_one_gpu_in_an_nccl_process_group_follows_the_plain_gpu_run(tmp_path: Path) -> None:
    """One GPU allows nccl's code path with one rank: reductions, gathers and the DDP wrapper."""
    alone, alone_root = _train_script(tmp_path, 1, accelerator="cuda", strategy="auto")
    ddp, ddp_root = _train_script(tmp_path, 1, accelerator="cuda", strategy="ddp")
    assert alone.returncode == 0, alone.stderr[-2000:]
    assert ddp.returncode == 0, ddp.stderr[-2000:]
    assert "rank 0 of 1 (nccl)" in ddp.stdout and "rank 0 of 1 (none)" in alone.stdout
    single, grouped = _metrics(alone_root), _metrics(ddp_root)
    assert list(grouped.columns) == list(single.columns) and len(grouped) == len(single)
    for column in ("loss_step", "loss_epoch", "loss_max", "valid_loss"):
        torch.testing.assert_close(
            torch.tensor(grouped[column].to_numpy()), torch.tensor(single[column].to_numpy()),
            equal_nan=True, rtol=1e-5, atol=1e-6,
        )  # fmt: skip
    gathered = torch.load(ddp_root / "predictions.pt")
    assert torch.equal(torch.cat([b["index"] for b in gathered]).cpu(), torch.arange(53))


@pytest.mark.slow
@pytest.mark.parametrize("rank", [0, 1])
def test_a_rank_that_raises_ends_the_run_quickly(tmp_path: Path, rank: int) -> None:
    # a hang (the other rank waiting for the 30-minute collective timeout) fails by the timeout
    result, _ = _train_script(tmp_path, 2, fail_at=3, fail_rank=rank, timeout=90)
    assert result.returncode != 0
    assert f"rank {rank} gives up" in result.stderr
    if rank == 1:  # rank 0, the script's own process, names the rank it started that failed
        assert "error: rank 1 exited with code 1" in result.stderr


@pytest.mark.slow
def test_a_nan_loss_on_one_rank_stops_both_at_the_same_check(tmp_path: Path) -> None:
    result, root = _train_script(tmp_path, 2, fail_at=2, fail_rank=1, how="nan", timeout=90)
    assert result.returncode != 0
    assert "the loss was nan or inf at global step 2" in result.stderr  # rank 1, where it was
    assert "the loss was nan or inf on another rank" in result.stderr  # rank 0, told so
    (folder,) = (root / "lightning_logs").iterdir()
    assert not any((folder / "checkpoints").glob("*.ckpt"))  # none written after the nan


def _config(tmp_path: Path, **trainer: object) -> Path:
    config = yaml.safe_load(yaml.safe_dump(CONFIG))
    config["trainer"].update(trainer)
    path = tmp_path / "ddp.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.mark.slow
def test_ltrain_fit_starts_the_workers_itself(tmp_path: Path) -> None:
    config = _config(tmp_path, devices=2, strategy="ddp")
    result = _run([sys.executable, "-m", "ltrain", "fit", str(config)], tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    versions = list((tmp_path / "runs" / "ddp").iterdir())
    assert [v.name for v in versions] == ["version_0"]
    metrics = pd.read_csv(versions[0] / "metrics.csv")
    assert metrics["step"].tolist().count(0) == 1  # each row once: only rank 0 writes
    assert (versions[0] / "config.yaml").is_file()
    assert result.stdout.count("Run folder:") == 1
    # the run resumes under DDP: a third epoch in the same folder, its rows written once
    resumed = _run(
        [sys.executable, "-m", "ltrain", "fit", str(config), "--set", "trainer.max_epochs=3",
         "--resume", "last"],
        tmp_path,
    )  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert [v.name for v in (tmp_path / "runs" / "ddp").iterdir()] == ["version_0"]
    metrics = pd.read_csv(versions[0] / "metrics.csv")
    assert sorted(metrics["epoch"].unique()) == [0, 1, 2]
    train_rows = metrics.dropna(subset=["train_loss_step"])
    assert train_rows["step"].is_unique and len(train_rows) == 3 * 4
    record = json.loads((versions[0] / "run.json").read_text())
    assert record["state"] == "finished" and record["epochs"] == 3 and len(record["previous"]) == 1
    # a checkpoint of the two-process run tests in one process
    test = _run([sys.executable, "-m", "ltrain", "test", "--ckpt", str(versions[0])], tmp_path, 120)
    assert test.returncode == 0, test.stderr[-2000:]
    assert "test_acc" in test.stdout


@pytest.mark.slow
def test_two_nodes_through_torchrun_on_localhost(tmp_path: Path) -> None:
    config = _config(tmp_path, num_nodes=2, devices=1, strategy="ddp")
    from ltrain.strategies.launcher import free_port

    port = str(free_port())

    def node(rank: int) -> subprocess.Popen:
        command = [
            sys.executable, "-m", "torch.distributed.run", "--nnodes=2", f"--node_rank={rank}",
            "--nproc_per_node=1", "--master_addr=127.0.0.1", f"--master_port={port}",
            "-m", "ltrain", "fit", str(config),
        ]  # fmt: skip
        return subprocess.Popen(
            command, cwd=tmp_path, env=_clean_environment(), stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True,
        )  # fmt: skip

    nodes = [node(0), node(1)]
    try:
        outputs = [n.communicate(timeout=240) for n in nodes]
    finally:  # a node left waiting for its peer must not outlive the test
        for n in nodes:
            n.kill()
    assert [n.returncode for n in nodes] == [0, 0], outputs[0][1][-2000:] + outputs[1][1][-2000:]
    versions = list((tmp_path / "runs" / "ddp").iterdir())
    assert [v.name for v in versions] == ["version_0"]
    assert len(pd.read_csv(versions[0] / "metrics.csv")) > 0


# ---------------------------------------------------------------------- the pieces, in-process
def test_several_devices_choose_ddp_and_one_device_does_not() -> None:
    assert isinstance(make_strategy("auto", "cpu", 1, 1), SingleDeviceStrategy)
    assert isinstance(make_strategy("auto", "cpu", "auto", 1), SingleDeviceStrategy)
    chosen = make_strategy("auto", "cpu", 2, 1)
    assert isinstance(chosen, DDPStrategy) and chosen.world_size == 2
    assert chosen.backend == "gloo" and chosen.root_device == torch.device("cpu")
    named = make_strategy("ddp_find_unused_parameters_true", "cpu", 3, 1)
    assert named.world_size == 3 and named.ddp_kwargs == {"find_unused_parameters": True}
    mine = DDPStrategy(timeout=30, static_graph=True)
    assert make_strategy(mine, "cpu", 2, 1) is mine and mine.timeout.total_seconds() == 30


@pytest.mark.parametrize(
    "arguments, message",
    [
        (("ddp_spawn", "cpu", 2, 1), "strategy='ddp_spawn' is not available; valid:"),
        (("ddp", "cpu", 2, 2), "num_nodes=2: start one launcher per node"),
        (("ddp", "cpu", 0, 1), "devices=0: expected at least 1"),
        (("ddp", "cpu", "two", 1), "devices='two': expected a number"),
        (("auto", "cpu", 2, 0), "num_nodes=0: expected an integer >= 1"),
        (("single_device", "cpu", 2, 1), "several processes need strategy='ddp'"),
    ],
)
def test_bad_layouts_are_named(arguments: tuple, message: str) -> None:
    with pytest.raises(MisconfigurationException, match=message.replace("(", r"\(")):
        make_strategy(*arguments)


def test_a_launcher_environment_is_joined_as_it_is(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {
        "RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2",
        "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500",
    }.items():  # fmt: skip
        monkeypatch.setenv(name, value)
    strategy = make_strategy("ddp", "cpu", "auto", 2)
    assert (strategy.global_rank, strategy.local_rank, strategy.world_size) == (3, 1, 4)
    assert strategy.node_rank == 1 and not strategy.is_global_zero
    with pytest.raises(MisconfigurationException, match="launcher's WORLD_SIZE is 4"):
        make_strategy("ddp", "cpu", "auto", 1)
    # several processes started by a launcher make 'auto' data-parallel
    assert isinstance(make_strategy("auto", "cpu", "auto", 2), DDPStrategy)


def test_sharded_tensor_batches_together_make_the_single_process_batch() -> None:
    x = torch.arange(21)
    single = TensorLoader(x, batch_size=6, shuffle=True, seed=3)
    shards = [TensorLoader(x, batch_size=2, shuffle=True, seed=3).shard(r, 3) for r in range(3)]
    for epoch in range(2):
        for loader in (single, *shards):
            loader.set_epoch(epoch)
        per_rank = [[b[0] for b in shard] for shard in shards]
        merged = [sorted(torch.cat(parts).tolist()) for parts in zip(*per_rank, strict=True)]
        assert merged == [sorted(b[0].tolist()) for b in single]


def test_uneven_data_is_padded_so_every_rank_steps_alike() -> None:
    shards = [TensorLoader(torch.arange(20), batch_size=4).shard(r, 3) for r in range(3)]
    assert [[b[0].tolist() for b in shard] for shard in shards] == [
        [[0, 3, 6, 9], [12, 15, 18]],
        [[1, 4, 7, 10], [13, 16, 19]],
        [[2, 5, 8, 11], [14, 17, 0]],  # sample 0 again: DistributedSampler pads the same way
    ]


def test_a_plain_dataloader_gets_a_distributed_sampler() -> None:
    data = TensorDataset(torch.arange(10))
    loader = DataLoader(data, batch_size=2, shuffle=True, drop_last=True, pin_memory=False)
    shard = shard_loader(loader, rank=1, world_size=2, kind="train")
    sampler = shard.sampler
    assert type(sampler).__name__ == "DistributedSampler" and sampler.shuffle
    assert (sampler.rank, sampler.num_replicas) == (1, 2)
    assert shard.batch_size == 2 and shard.drop_last
    plain = shard_loader(DataLoader(data, batch_size=3), rank=0, world_size=2, kind="val")
    assert [b[0].tolist() for b in plain] == [[0, 2, 4], [6, 8]]


def test_a_custom_sampler_is_kept_with_a_warning() -> None:
    data = TensorDataset(torch.arange(4))
    loader = DataLoader(data, sampler=[3, 2, 1, 0])
    with pytest.warns(UserWarning, match="custom sampler"):
        assert shard_loader(loader, rank=0, world_size=2, kind="train") is loader


def test_predictions_split_into_samples_and_back() -> None:
    batch = {"label": torch.arange(3), "pair": (torch.zeros(3, 2), torch.ones(3))}
    samples = split_samples(batch)
    assert len(samples) == 3 and samples[1]["pair"][1].item() == 1
    again = stack_samples(samples)
    assert torch.equal(again["label"], batch["label"])
    assert torch.equal(again["pair"][0], batch["pair"][0])
    assert split_samples(torch.tensor(1.0)) is None
    assert split_samples({"a": torch.zeros(2), "b": torch.zeros(3)}) is None
    assert split_samples("text") is None


def test_an_interactive_session_cannot_be_run_again(monkeypatch: pytest.MonkeyPatch) -> None:
    main = sys.modules["__main__"]
    monkeypatch.setattr(main, "__spec__", None, raising=False)
    monkeypatch.setattr(sys, "argv", ["-c"])
    with pytest.raises(MisconfigurationException, match="not started from a file"):
        rerun_command()
    monkeypatch.setattr(sys, "argv", [__file__, "--flag"])
    assert rerun_command() == [sys.executable, os.path.abspath(__file__), "--flag"]


def test_one_process_reductions_are_identities() -> None:
    trainer = pl.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False)
    value = torch.tensor(2.5)
    assert trainer.strategy.reduce(value, "sum") is value
    assert trainer.strategy.reduce_boolean_decision(True) is True
    assert trainer.strategy.broadcast({"a": 1}) == {"a": 1}


RAISER = """
import ltrain as pl

class RaiseOnRankOne(pl.Callback):
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_rank == 1 and trainer.global_step == 2:
            raise RuntimeError("rank 1 stops here")
"""


@pytest.mark.slow
def test_the_launcher_names_the_rank_that_failed_first(tmp_path: Path) -> None:
    (tmp_path / "raiser.py").write_text(RAISER)
    config = _config(tmp_path, devices=2, strategy="ddp")
    spec = yaml.safe_load(config.read_text())
    spec["trainer"]["callbacks"].append({"class_path": "raiser.RaiseOnRankOne"})
    config.write_text(yaml.safe_dump(spec))
    result = _run([sys.executable, "-m", "ltrain", "fit", str(config)], tmp_path, timeout=90)
    assert result.returncode == 1
    assert "rank 1 stops here" in result.stderr
    assert "error: rank 1 exited with code 1; stopping the other 1 rank(s)" in result.stderr


TWO_BACKWARDS = '''
import sys
import torch
import ltrain as pl
from ltrain.data import TensorLoader


class TwoLosses(pl.LightningModule):
    """A GAN's shape: two optimizers, two manual_backward calls in one training_step."""

    def __init__(self):
        super().__init__()
        self.automatic_optimization = False
        self.first = torch.nn.Linear(4, 4)
        self.second = torch.nn.Linear(4, 1)

    def training_step(self, batch, batch_idx):
        one, two = self.optimizers()
        (x,) = batch
        loss_one = self.second(self.first(x)).pow(2).mean()
        one.zero_grad()
        self.manual_backward(loss_one)
        one.step()
        loss_two = self.second(self.first(x).detach()).abs().mean()
        two.zero_grad()
        self.manual_backward(loss_two)
        two.step()
        self.log("loss_two", loss_two, sync_dist=True)

    def configure_optimizers(self):
        return (
            torch.optim.SGD(self.first.parameters(), lr=0.1),
            torch.optim.SGD(self.second.parameters(), lr=0.1),
        )


pl.seed_everything(0)
data = torch.randn(64, 4, generator=torch.Generator().manual_seed(0))
devices = int(sys.argv[1])
trainer = pl.Trainer(
    strategy="ddp_find_unused_parameters_true" if devices > 1 else "auto", devices=devices,
    accelerator="cpu", max_epochs=1, logger=False, enable_checkpointing=False,
    enable_progress_bar=False, enable_model_summary=False,
)
trainer.fit(TwoLosses(), TensorLoader(data, batch_size=16 // devices))
if trainer.is_global_zero:
    torch.save(trainer.lightning_module.state_dict(), sys.argv[2])
'''


@pytest.mark.slow
def test_manual_optimization_with_two_backwards_per_step(tmp_path: Path) -> None:
    script = tmp_path / "gan.py"
    script.write_text(TWO_BACKWARDS)
    weights = {}
    for devices in (1, 2):
        out = tmp_path / f"weights{devices}.pt"
        result = _run([sys.executable, str(script), str(devices), str(out)], tmp_path)
        assert result.returncode == 0, result.stderr[-3000:]
        weights[devices] = torch.load(out, weights_only=True)
    for name, value in weights[1].items():  # 2 x 8 samples averaged = 1 x 16 samples
        torch.testing.assert_close(weights[2][name], value, rtol=1e-5, atol=1e-6)


def test_a_dataloader_subclass_is_rebuilt_with_a_warning() -> None:
    class Mine(DataLoader):
        pass

    loader = Mine(TensorDataset(torch.arange(6)), batch_size=2)
    with pytest.warns(UserWarning, match="a Mine, is rebuilt as a plain DataLoader"):
        shard = shard_loader(loader, rank=0, world_size=2, kind="train")
    assert [b[0].tolist() for b in shard] == [[0, 2], [4]]
