"""The measured workloads. Each runs in a fresh process (`python workloads.py NAME [ARGS]`) and prints
one JSON line; bench.py alternates them and does the statistics.

Timed regions, the same for both sides of a comparison: one epoch's training batches, fetch and
step (start-up, data loading before the loop, the model summary and checkpoint writes after it are
outside; see EpochClock). Torch runs with one thread for the per-step comparisons, so a neighbour on
the other core disturbs less.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from collections.abc import Callable

import torch
from torch.nn import functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ltrain.callbacks.base import Callback  # noqa: E402  (after the path above)


# ---------------------------------------------------------------------- models and data
def tiny_network() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.ReLU(), torch.nn.Linear(64, 4))


def tiny_data(steps: int, batch: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(steps * batch, 32, generator=generator)
    return x, torch.randint(0, 4, (steps * batch,), generator=generator)


def plain_step(
    network: torch.nn.Module, optimizer: torch.optim.Optimizer, xb: torch.Tensor, yb: torch.Tensor
) -> None:
    """One step of the hand-written loop every comparison measures ltrain against."""
    logits = network(xb)
    loss = F.cross_entropy(logits, yb)
    (logits.argmax(1) == yb).float().mean()  # the same accuracy the ltrain side logs
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()


def mnist_shaped(samples: int = 60_000) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 images (N, 1, 28, 28) and labels: real digits (scikit-learn's), enlarged and shifted."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = torch.from_numpy(digits.images).float().unsqueeze(1) / 16
    big = F.interpolate(images, size=(20, 20), mode="bilinear", align_corners=False)
    generator = torch.Generator().manual_seed(0)
    pick = torch.randint(0, len(big), (samples,), generator=generator)
    canvas = torch.zeros(samples, 1, 28, 28)
    shifts = torch.randint(0, 9, (samples, 2), generator=generator)
    for dy in range(9):  # place each digit at one of 81 offsets, vectorised per offset row
        for dx in range(9):
            chosen = (shifts[:, 0] == dy) & (shifts[:, 1] == dx)
            canvas[chosen, :, dy : dy + 20, dx : dx + 20] = big[pick[chosen]]
    noise = 0.1 * torch.rand(samples, 1, 28, 28, generator=generator)
    pixels = ((canvas + noise).clamp(0, 1) * 255).to(torch.uint8)
    return pixels, torch.from_numpy(digits.target)[pick].to(torch.int64)


def write_mnist_idx(root: str, train: int = 60_000, test: int = 10_000) -> None:
    """MNIST-shaped IDX files that torchvision's reader (and so ltrain's MNIST) reads."""
    import struct

    raw = os.path.join(root, "MNIST", "raw")
    os.makedirs(raw, exist_ok=True)
    images, labels = mnist_shaped(train + test)
    for prefix, part in (("train", slice(0, train)), ("t10k", slice(train, train + test))):
        x, y = images[part].squeeze(1), labels[part].to(torch.uint8)
        with open(os.path.join(raw, f"{prefix}-images-idx3-ubyte"), "wb") as handle:
            handle.write(struct.pack(">IIII", 0x803, len(x), 28, 28) + x.numpy().tobytes())
        with open(os.path.join(raw, f"{prefix}-labels-idx1-ubyte"), "wb") as handle:
            handle.write(struct.pack(">II", 0x801, len(y)) + y.numpy().tobytes())


def accuracy_of(network: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float((network(x.float() / 255).argmax(1) == y).float().mean())


# ---------------------------------------------------------------------- ltrain side
def _ltrain_module(
    network: torch.nn.Module,
    lr: float,
    optimizer: str | Callable[..., torch.optim.Optimizer],
    scale: float | None,
    before_step: Callable[[int], None] | None = None,
) -> object:
    """`before_step(batch_idx)` starts each training_step (instructions.py counts steps with it).

    `optimizer` is "sgd" or "adam" (with `lr`), or a function of the parameters that builds one
    (the GPU rows' SGD with momentum; `lr` is then unused).
    """
    import ltrain as pl

    class Classifier(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = network

        def training_step(self, batch, batch_idx):
            if before_step is not None:
                before_step(batch_idx)
            x, y = batch
            if scale is not None:
                x = x.float() / scale
            logits = self.net(x)
            loss = F.cross_entropy(logits, y)
            accuracy = (logits.argmax(1) == y).float().mean()
            self.log_dict(
                {"loss": loss, "acc": accuracy}, on_step=True, on_epoch=True, prog_bar=True
            )
            return loss

        def configure_optimizers(self):
            if callable(optimizer):
                return optimizer(self.parameters())
            if optimizer == "sgd":
                return torch.optim.SGD(self.parameters(), lr=lr)
            return torch.optim.Adam(self.parameters(), lr=lr)

    return Classifier()


def _fit(module: object, loader: object, root: str) -> object:
    import ltrain as pl

    clock = EpochClock()
    trainer = pl.Trainer(
        max_epochs=1,
        accelerator=os.environ.get("BENCH_ACCELERATOR", "cpu"),
        default_root_dir=root,
        callbacks=[clock],
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    trainer.fit(module, loader)
    return clock


# ---------------------------------------------------------------------- workloads
def tiny_plain(steps: int) -> dict:
    torch.set_num_threads(1)
    x, y = tiny_data(steps)
    network = tiny_network()
    optimizer = torch.optim.SGD(network.parameters(), lr=0.01)
    start = time.perf_counter()
    for i in range(steps):
        plain_step(network, optimizer, x[i * 32 : (i + 1) * 32], y[i * 32 : (i + 1) * 32])
    return {"seconds_per_step": (time.perf_counter() - start) / steps}


def tiny_ltrain(steps: int) -> dict:
    from ltrain.data import TensorLoader

    torch.set_num_threads(1)
    module = _ltrain_module(tiny_network(), 0.01, "sgd", None)
    with tempfile.TemporaryDirectory() as root:
        clock = _fit(module, TensorLoader(*tiny_data(steps), batch_size=32), root)
    return {"seconds_per_step": (clock.end - clock.start) / clock.batches}


def seed_plain(samples: int) -> dict:
    from ltrain.zoo import TwoBranchMLP

    torch.set_num_threads(1)
    x, y = mnist_shaped(samples)
    network = TwoBranchMLP()
    optimizer = torch.optim.Adam(network.parameters(), lr=1e-3)
    order = torch.randperm(samples, generator=torch.Generator().manual_seed(0))
    steps = -(-samples // 128)
    start = time.perf_counter()
    for i in range(steps):
        index = order[i * 128 : (i + 1) * 128]
        plain_step(network, optimizer, x[index].float() / 255, y[index])
    return {"seconds": time.perf_counter() - start, "steps": steps}


def seed_ltrain(samples: int) -> dict:
    from ltrain.data import TensorLoader
    from ltrain.zoo import TwoBranchMLP

    torch.set_num_threads(1)
    x, y = mnist_shaped(samples)
    module = _ltrain_module(TwoBranchMLP(), 1e-3, "adam", 255.0)
    with tempfile.TemporaryDirectory() as root:
        clock = _fit(module, TensorLoader(x, y, batch_size=128, shuffle=True), root)
    return {"seconds": clock.end - clock.start, "steps": clock.batches}


def classic_recipe(root: str, epochs: int = 1) -> dict:
    """torchvision's MNIST(transform=ToTensor()) + DataLoader(128, shuffle=True), plain loop.

    Times the first epoch; the accuracy is the test set's after `epochs` epochs.
    """
    from torchvision import datasets, transforms

    from ltrain.zoo import TwoBranchMLP

    torch.manual_seed(0)
    train = datasets.MNIST(root, train=True, transform=transforms.ToTensor())
    loader = torch.utils.data.DataLoader(train, batch_size=128, shuffle=True)
    network = TwoBranchMLP()
    optimizer = torch.optim.Adam(network.parameters(), lr=1e-3)
    seconds = 0.0
    for _ in range(epochs):
        start = time.perf_counter()
        for xb, yb in loader:
            loss = F.cross_entropy(network(xb), yb)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        seconds = seconds or time.perf_counter() - start
    test = datasets.MNIST(root, train=False)
    return {
        "seconds": seconds,
        "accuracy": accuracy_of(network, test.data.unsqueeze(1), test.targets),
    }


def preloaded_plain(root: str) -> dict:
    """The same model in a plain loop over the whole set preloaded as one uint8 tensor."""
    from torchvision import datasets

    from ltrain.zoo import TwoBranchMLP

    torch.manual_seed(0)
    train = datasets.MNIST(root, train=True)
    x, y = train.data.unsqueeze(1), train.targets
    network = TwoBranchMLP()
    optimizer = torch.optim.Adam(network.parameters(), lr=1e-3)
    start = time.perf_counter()
    order = torch.randperm(len(y))
    for i in range(0, len(y), 128):
        index = order[i : i + 128]
        loss = F.cross_entropy(network(x[index].float() / 255), y[index])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    seconds = time.perf_counter() - start
    test = datasets.MNIST(root, train=False)
    return {
        "seconds": seconds,
        "accuracy": accuracy_of(network, test.data.unsqueeze(1), test.targets),
    }


def ltrain_mnist_config(root: str, epochs: int = 1, held_out: str = "0.0833") -> dict:
    """`ltrain fit configs/mnist.yaml` for one epoch on the files in `root`, as a user runs it.

    An `EpochClock` callback (this file is put on PYTHONPATH) records the timed region.
    `held_out` is the validation share (the config's 5,000 of 60,000, at any size); the
    accuracy comparison passes 0, to train on the same 60,000 images as the classic recipe.
    """
    import subprocess

    from torchvision import datasets

    from ltrain.zoo import MLPClassifier

    here = os.path.dirname(os.path.abspath(__file__))
    config = os.path.join(os.path.dirname(here), "configs", "mnist.yaml")
    with tempfile.TemporaryDirectory() as work:
        clock_file = os.path.join(work, "clock.json")
        callbacks = (
            "[{class_path: workloads.EpochClock, init_args: {out: " + clock_file + "}}, "
            "{class_path: ModelCheckpoint, init_args: {save_last: true}}]"
        )
        env = {**os.environ, "PYTHONPATH": here}
        subprocess.run(
            [sys.executable, "-m", "ltrain", "fit", config, "--set", f"data.root={root}",
             "--set", f"data.val_split={held_out}",
             "--set", f"trainer.max_epochs={epochs}", "--set", f"trainer.callbacks={callbacks}"],
            cwd=work, env=env, check=True, capture_output=True,
        )  # fmt: skip
        with open(clock_file) as handle:
            timing = json.load(handle)
        last = os.path.join(work, "runs", "mnist-mlp", "version_0", "checkpoints", "last.ckpt")
        state = torch.load(last, weights_only=True)["state_dict"]
    model = MLPClassifier()
    model.load_state_dict(state)
    test = datasets.MNIST(root, train=False)
    accuracy = accuracy_of(model.model, test.data.unsqueeze(1), test.targets)
    return {"seconds": timing["seconds"], "accuracy": accuracy}


class EpochClock(Callback):
    """Times the first training epoch, from on_train_epoch_start to on_train_epoch_end.

    Epoch hooks, not batch hooks, so the clock adds nothing to the steps it times. The region holds
    every batch's fetch and step, as the plain loops' regions do, plus the epoch's own opening and
    closing work (the permutation, the epoch means), which can only count against ltrain. With
    `out`, the seconds are also written there as JSON (for runs through the CLI). With
    `synchronize` (CUDA runs), the clock waits for the GPU before it reads the time at both ends,
    so the region holds the GPU work the epoch queued, not only its launches.
    """

    def __init__(self, out: str | None = None, synchronize: bool = False) -> None:
        self.out = out
        self.synchronize = synchronize
        self.start = self.end = 0.0
        self.batches = 0

    def _now(self) -> float:
        if self.synchronize:
            torch.cuda.synchronize()
        return time.perf_counter()

    def on_train_epoch_start(self, trainer, pl_module):
        if trainer.current_epoch == 0:
            self.start = self._now()

    def on_train_epoch_end(self, trainer, pl_module):
        if trainer.current_epoch:  # the first epoch is the timed one
            return
        self.end, self.batches = self._now(), trainer.num_training_batches
        if self.out is not None:
            with open(self.out, "w") as handle:
                json.dump({"seconds": self.end - self.start}, handle)


def ddp_seed(processes: int, samples: int) -> dict:
    """The seed MLP for one epoch, total batch 128, in `processes` data-parallel CPU processes.

    With 2, the Trainer starts rank 1 by running this file again; each rank uses one thread.
    Times rank 0's epoch from its first to its last batch, as `seed_ltrain` does.
    """
    import ltrain as pl
    from ltrain.data import TensorLoader
    from ltrain.zoo import TwoBranchMLP

    torch.set_num_threads(1)
    x, y = mnist_shaped(samples)
    module = _ltrain_module(TwoBranchMLP(), 1e-3, "adam", 255.0)
    clock = EpochClock()
    with tempfile.TemporaryDirectory() as root:
        trainer = pl.Trainer(
            max_epochs=1,
            accelerator="cpu",
            devices=processes,
            strategy="ddp" if processes > 1 else "auto",
            default_root_dir=root,
            callbacks=[clock],
            enable_model_summary=False,
            enable_progress_bar=False,
            num_sanity_val_steps=0,
        )
        trainer.fit(module, TensorLoader(x, y, batch_size=128 // processes, shuffle=True))
    return {"seconds": clock.end - clock.start, "steps": clock.batches}


def lightning_installed() -> dict:
    for name in ("lightning", "pytorch_lightning"):
        try:
            module = __import__(name)
        except ImportError:
            continue
        return {"installed": True, "version": getattr(module, "__version__", "?")}
    return {"installed": False}


WORKLOADS = {
    "tiny_plain": tiny_plain,
    "tiny_ltrain": tiny_ltrain,
    "seed_plain": seed_plain,
    "seed_ltrain": seed_ltrain,
    "classic_recipe": classic_recipe,
    "preloaded_plain": preloaded_plain,
    "ltrain_mnist_config": ltrain_mnist_config,
    "write_mnist_idx": lambda root, train, test: write_mnist_idx(root, train, test) or {},
    "lightning_installed": lightning_installed,
    "ddp_seed": ddp_seed,
}

if __name__ == "__main__":
    name, *arguments = sys.argv[1:]
    parsed = [int(a) if a.isdigit() else a for a in arguments]  # "0.0833" stays text
    result = WORKLOADS[name](*parsed)
    if os.environ.get("RANK", "0") == "0":  # the other ranks of a data-parallel run stay quiet
        print(json.dumps(result))
