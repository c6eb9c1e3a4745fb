"""Per-step overhead of `Trainer.fit` over a hand-written PyTorch loop (the `make bench` entry).

Workload: a 32->64->4 MLP, batch 32, SGD, on the CPU with one thread. The ltrain side logs a loss
and an accuracy with on_step=True, on_epoch=True, writes metrics.csv every 50 steps and runs its
progress display (plain lines, as stdout is a pipe here). Each measurement is a fresh process;
plain and ltrain alternate for several rounds, and the table reports medians and the median of the
per-round differences. Timed region on both sides: from the first to the last training batch of
one epoch (start-up, the model summary and the checkpoint write are outside it).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time

STEPS, BATCH = 2000, 32


def _data():
    import torch

    generator = torch.Generator().manual_seed(0)
    x = torch.randn(STEPS * BATCH, 32, generator=generator)
    y = torch.randint(0, 4, (STEPS * BATCH,), generator=generator)
    return x, y


def _network():
    import torch

    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.ReLU(), torch.nn.Linear(64, 4))


def measure_plain() -> float:
    import torch
    from torch.nn import functional as F

    torch.set_num_threads(1)
    x, y = _data()
    net = _network()
    optimizer = torch.optim.SGD(net.parameters(), lr=0.01)
    start = time.perf_counter()
    for i in range(STEPS):
        xb, yb = x[i * BATCH : (i + 1) * BATCH], y[i * BATCH : (i + 1) * BATCH]
        loss = F.cross_entropy(net(xb), yb)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return (time.perf_counter() - start) / STEPS


def measure_ltrain() -> float:
    import torch
    from torch.nn import functional as F

    import ltrain as pl
    from ltrain.data import TensorLoader

    torch.set_num_threads(1)

    class Tiny(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = _network()

        def training_step(self, batch, batch_idx):
            xb, yb = batch
            logits = self.net(xb)
            loss = F.cross_entropy(logits, yb)
            accuracy = (logits.argmax(1) == yb).float().mean()
            self.log_dict(
                {"loss": loss, "acc": accuracy}, on_step=True, on_epoch=True, prog_bar=True
            )
            return loss

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.01)

    class Clock(pl.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if batch_idx == 0:
                self.start = time.perf_counter()

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            self.end = time.perf_counter()

    clock = Clock()
    with tempfile.TemporaryDirectory() as root:
        trainer = pl.Trainer(
            max_epochs=1,
            accelerator="cpu",
            default_root_dir=root,
            callbacks=[clock],
            enable_model_summary=False,
        )
        trainer.fit(Tiny(), TensorLoader(*_data(), batch_size=BATCH))
    return (clock.end - clock.start) / (STEPS - 1)


def _busy_fraction(seconds: float = 0.5) -> float:
    """Share of the machine's CPU time used by others over `seconds` (0 on an idle machine)."""

    def read() -> tuple[int, int]:
        with open("/proc/stat") as stat:
            fields = [int(v) for v in stat.readline().split()[1:]]
        return sum(fields), fields[3] + fields[4]

    total0, idle0 = read()
    time.sleep(seconds)
    total1, idle1 = read()
    return 1 - (idle1 - idle0) / max(1, total1 - total0)


def _run_child(side: str) -> float:
    out = subprocess.run(
        [sys.executable, __file__, "--child", side], capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])["seconds_per_step"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--child", choices=["plain", "ltrain"])
    args = parser.parse_args()
    if args.child:
        seconds = measure_plain() if args.child == "plain" else measure_ltrain()
        print(json.dumps({"seconds_per_step": seconds}))
        return
    plain, ours, loads = [], [], []
    for _ in range(args.rounds):
        loads.append(_busy_fraction())
        plain.append(_run_child("plain") * 1e3)
        ours.append(_run_child("ltrain") * 1e3)
    differences = [o - p for o, p in zip(ours, plain, strict=True)]
    ratios = [o / p for o, p in zip(ours, plain, strict=True)]
    print(f"tiny MLP 32->64->4, batch {BATCH}, {STEPS} steps, CPU, 1 thread, {args.rounds} rounds")
    print(f"machine busy before rounds: {', '.join(f'{b:.0%}' for b in loads)}")
    print(f"{'':<22}{'min':>8}{'median':>8}{'max':>8}  (ms/step)")
    for name, values in (("plain loop", plain), ("ltrain Trainer.fit", ours)):
        print(f"{name:<22}{min(values):8.3f}{statistics.median(values):8.3f}{max(values):8.3f}")
    print(
        f"ltrain overhead: median of paired differences {statistics.median(differences):+.3f} ms/step, ratio {statistics.median(ratios):.2f}x"
    )


if __name__ == "__main__":
    main()
