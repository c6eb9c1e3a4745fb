"""The GPU rows of `make bench`: ltrain and a plain PyTorch loop, side by side on one GPU.

`python gpu_workloads.py NAME [options]` runs one row (or, for `resnet`, one row per precision)
in this one process and prints one JSON line with every round's seconds and steps per side;
bench.py does the statistics. NAME is `tiny`, `mnist` or `resnet`.

Unlike the CPU rows (a fresh process per measurement), the sides here alternate inside one process:
each side first runs untimed (warm-up), then the sides take turns, A B A B ..., for `--rounds`
rounds. A CUDA process costs 5-10 s to start, which the GPU budget cannot pay per measurement, and
the reasons for fresh processes on a shared 2-core machine do not hold on a GPU host: the host is
not shared, so no neighbour slows one side; both sides see the same CUDA context, caching allocator
and cuDNN autotune cache, which the warm-ups fill for both (cuDNN's benchmark autotune and the
first launch of every kernel happen there, not in a timed round); and every round builds a fresh
model, optimizer (and, for ltrain, Trainer), so no side inherits state the other lacks. The garbage
collector runs before every timed side, so one side's garbage is not collected in the other's time.

Timed regions, the same for both sides: one whole epoch of training steps (batch fetch, forward,
loss, accuracy, backward, optimizer step), with `torch.cuda.synchronize()` before the clock starts
and before it stops, so a region holds the GPU work its steps queued. The plain loops time their
epoch directly; the ltrain side is timed by `workloads.EpochClock(synchronize=True)`, a callback
on the epoch hooks, so Trainer start-up, setup, moving the model and data, and what follows the
epoch (its CSV row and flush) are outside, as are the data set's reading and the model's building
on the plain side. The ltrain side runs as users run it: CSV logger, progress bar (one line per
epoch when stdout is a pipe), `log_every_n_steps=50`, `loss` and `acc` logged on step and epoch;
model summary, checkpointing and the sanity check are off. The plain loops compute the same
accuracy tensor (never read on the host).

`--device cpu` (or GPU_WORKLOADS_DEVICE=cpu) runs the same code on the CPU, for a smoke test on a
machine without a GPU: the same functions run, only `torch.cuda.synchronize()` is skipped (and
torch uses one thread, as in the CPU rows). ltrain refuses `16-mixed` on the CPU, so there its side
of that row is skipped, with ltrain's reason in the JSON; the plain side still runs its fp16 code
path (GradScaler: scale, unscale, step, update) but autocasts to bf16, because fp16 autocast on the
CPU is tens of times slower (8 ResNet steps at batch 64 took 109 s).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

import torch
from torch.nn import functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import workloads  # noqa: E402  (puts the repository root on sys.path for ltrain)

AUTOCAST_DTYPES = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}


# ---------------------------------------------------------------------- timing
def synchronizer(device: torch.device) -> Callable[[], None]:
    """What makes the host wait for the device: CUDA's synchronize, or nothing on the CPU."""
    if device.type == "cuda":
        return torch.cuda.synchronize
    return lambda: None


def timed(device: torch.device, body: Callable[[], int]) -> dict:
    """Seconds and steps of `body` (which returns its step count), GPU work included."""
    sync = synchronizer(device)
    gc.collect()
    sync()
    start = time.perf_counter()
    steps = body()
    sync()
    return {"seconds": time.perf_counter() - start, "steps": steps}


def ltrain_epoch(
    device: torch.device,
    module: Any,
    root: str,
    precision: str = "32-true",
    loader: Any = None,
    datamodule: Any = None,
    limit: int | None = None,
) -> dict:
    """One epoch of `Trainer.fit` with the users' defaults, timed by EpochClock (see above).

    `limit` (limit_train_batches) makes it a warm-up of that many batches.
    """
    import ltrain as pl

    clock = workloads.EpochClock(synchronize=device.type == "cuda")
    trainer = pl.Trainer(
        max_epochs=1,
        accelerator=device.type,
        precision=precision,
        default_root_dir=root,
        callbacks=[clock],
        enable_checkpointing=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_train_batches=limit,
    )
    gc.collect()
    trainer.fit(module, train_dataloaders=loader, datamodule=datamodule)
    return {"seconds": clock.end - clock.start, "steps": clock.batches}


def alternate(sides: dict[str, Callable[..., dict]], rounds: int, warmup: int) -> dict:
    """Each side once untimed with `limit=warmup`, then `rounds` rounds of every side in turn.

    A side is a function of `limit` (None: the whole epoch) returning {"seconds", "steps"}; one
    that returns None in a round (the classic recipe after its rounds) is left out of it.
    """
    for run in sides.values():
        run(limit=warmup)
    results: dict[str, dict[str, list]] = {n: {"seconds": [], "steps": []} for n in sides}
    for round_index in range(rounds):
        for name, run in sides.items():
            result = run(limit=None, round_index=round_index)
            if result is None:
                continue
            results[name]["seconds"].append(result["seconds"])
            results[name]["steps"].append(result["steps"])
    return results


def environment(device: torch.device) -> dict:
    """The device, its name and the versions every row records."""
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = f"CPU ({platform.processor() or platform.machine()}, smoke test)"
    return {
        "device": device.type,
        "device_name": name,
        "torch": torch.__version__,
        "python": platform.python_version(),
    }


# ---------------------------------------------------------------------- 1. tiny MLP
def tiny(device: torch.device, steps: int, rounds: int, warmup: int, root: str) -> list[dict]:
    """The tiny MLP 32-64-4, batch 32, SGD, fp32, data already on the device.

    ltrain reads batches from `TensorLoader` over the device tensors, the plain loop slices the
    same tensors. The GPU does microseconds of work per step: the host's per-step work decides
    the speed, so the row shows ltrain's per-step overhead on a GPU.
    """
    from ltrain.data import TensorLoader

    batch = 32
    x, y = (t.to(device) for t in workloads.tiny_data(steps, batch))

    def plain(limit: int | None, round_index: int = 0) -> dict:
        network = workloads.tiny_network().to(device)
        optimizer = torch.optim.SGD(network.parameters(), lr=0.01)
        count = steps if limit is None else min(limit, steps)

        def body() -> int:
            for i in range(count):
                lo, hi = i * batch, (i + 1) * batch
                workloads.plain_step(network, optimizer, x[lo:hi], y[lo:hi])
            return count

        return timed(device, body)

    def ours(limit: int | None, round_index: int = 0) -> dict:
        module = workloads._ltrain_module(workloads.tiny_network(), 0.01, "sgd", None)
        loader = TensorLoader(x, y, batch_size=batch)
        return ltrain_epoch(device, module, root, loader=loader, limit=limit)

    results = alternate({"plain": plain, "ltrain": ours}, rounds, warmup)
    return [{"row": "tiny", "precision": "32-true", "batch": batch, "sides": results}]


# ---------------------------------------------------------------------- 2. seed MLP, MNIST-shaped
def mnist(
    device: torch.device,
    samples: int,
    rounds: int,
    warmup: int,
    root: str,
    classic_rounds: int,
    data: str | None = None,
) -> list[dict]:
    """The seed two-branch MLP, Adam 1e-3, batch 128, one shuffled epoch of `samples` images.

    Three sides, all reading the same IDX files (written here unless `data` names a folder that
    holds them) and all on the device:
    - ltrain: the `ltrain.data.MNIST` data module as users get it (uint8 images moved to the GPU
      once, batches by permuted index, /255 on the device); `val_split=0`, so it trains on all
      `samples` images as the others do;
    - classic: torchvision's `MNIST(transform=ToTensor())` + `DataLoader(128, shuffle=True)`,
      each batch `.to(device)` in a plain loop (only the first `classic_rounds` rounds: it is
      the slow side, and it takes the most of the row's time);
    - resident: a plain loop over the same uint8 images on the device, batches by the same
      permutation ltrain's loader draws, /255 on the device: step for step ltrain's computation.
    """
    from torchvision import datasets, transforms

    from ltrain.data import MNIST
    from ltrain.zoo import TwoBranchMLP

    batch = 128
    if data is None:
        data = os.path.join(root, "data")
        workloads.write_mnist_idx(data, samples, max(100, samples // 60))
    images = datasets.MNIST(data, train=True)
    x, y = images.data.unsqueeze(1).to(device), images.targets.to(device)
    classic_set = datasets.MNIST(data, train=True, transform=transforms.ToTensor())

    def network_and_optimizer() -> tuple[torch.nn.Module, torch.optim.Optimizer]:
        torch.manual_seed(0)
        network = TwoBranchMLP().to(device)
        return network, torch.optim.Adam(network.parameters(), lr=1e-3)

    def resident(limit: int | None, round_index: int = 0) -> dict:
        network, optimizer = network_and_optimizer()
        stop = len(y) if limit is None else min(len(y), limit * batch)

        def body() -> int:
            # the permutation of ltrain's loader (seed 0, epoch 0), drawn as TensorLoader draws
            # it: on the host, copied to the device once per pass
            generator = torch.Generator().manual_seed(0)
            order = torch.randperm(len(y), generator=generator).to(device)
            steps = 0
            for lo in range(0, stop, batch):
                index = order[lo : lo + batch]
                xb = x[index].float().div_(255)
                workloads.plain_step(network, optimizer, xb, y[index])
                steps += 1
            return steps

        return timed(device, body)

    def classic(limit: int | None, round_index: int = 0) -> dict | None:
        if limit is None and round_index >= classic_rounds:
            return None
        network, optimizer = network_and_optimizer()
        loader = torch.utils.data.DataLoader(classic_set, batch_size=batch, shuffle=True)

        def body() -> int:
            steps = 0
            for xb, yb in loader:
                workloads.plain_step(network, optimizer, xb.to(device), yb.to(device))
                steps += 1
                if limit is not None and steps >= limit:
                    break
            return steps

        return timed(device, body)

    def ours(limit: int | None, round_index: int = 0) -> dict:
        torch.manual_seed(0)
        module = workloads._ltrain_module(TwoBranchMLP(), 1e-3, "adam", None)
        datamodule = MNIST(root=data, batch_size=batch, val_split=0)
        return ltrain_epoch(device, module, root, datamodule=datamodule, limit=limit)

    sides = {"classic": classic, "resident": resident, "ltrain": ours}
    results = alternate(sides, rounds, warmup)
    row = {"row": "mnist", "precision": "32-true", "batch": batch, "samples": len(y)}
    return [{**row, "sides": results}]


# ---------------------------------------------------------------------- 3. ResNet-18, mixed precision
def plain_amp_step(
    network: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler | None,
    xb: torch.Tensor,
    yb: torch.Tensor,
    dtype: torch.dtype,
) -> None:
    """`plain_step` under autocast, with what ltrain's mixed precision does around it.

    Autocast covers what ltrain's training_step holds (scaling the uint8 batch, forward, loss,
    accuracy); zero_grad, backward and the step run outside it. With fp16 the scaler scales the
    loss, unscales the gradients before the step (ltrain does it explicitly so hooks and clipping
    see true gradients; `scaler.step` would otherwise do the same unscale itself), steps, updates.
    """
    with torch.autocast(xb.device.type, dtype=dtype):
        logits = network(xb.float() / 255)
        loss = F.cross_entropy(logits, yb)
        (logits.argmax(1) == yb).float().mean()  # the accuracy ltrain's side logs
    optimizer.zero_grad()
    if scaler is None:
        loss.backward()
        optimizer.step()
        return
    scaler.scale(loss).backward()
    scaler.unscale_(optimizer)
    scaler.step(optimizer)
    scaler.update()


def resnet_sgd(parameters: Any) -> torch.optim.Optimizer:
    return torch.optim.SGD(parameters, lr=0.1, momentum=0.9, weight_decay=5e-4)


def resnet(
    device: torch.device,
    steps: int,
    rounds: int,
    warmup: int,
    root: str,
    batch: int,
    precisions: list[str],
) -> list[dict]:
    """torchvision's ResNet-18 (10 classes) on CIFAR-shaped data, one row per precision.

    The images are random uint8 (N, 3, 32, 32) made on the device (labels 0..9), N = steps *
    batch, so every batch is full and of one shape; both sides turn a batch into floats /255 on
    the device, unshuffled. SGD lr 0.1, momentum 0.9, weight decay 5e-4. ltrain runs
    `Trainer(accelerator=..., precision=...)`; the plain loop autocasts to the same dtype and, for
    fp16, uses a GradScaler as ltrain does. cuDNN benchmark mode is on for the whole process, so
    for both sides.
    """
    from torchvision.models import resnet18

    from ltrain.data import TensorLoader

    torch.backends.cudnn.benchmark = True
    generator = torch.Generator(device=device).manual_seed(0)
    n = steps * batch
    x = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, device=device, generator=generator)
    y = torch.randint(0, 10, (n,), device=device, generator=generator)

    def network() -> torch.nn.Module:
        torch.manual_seed(0)
        return resnet18(num_classes=10)

    rows = []
    for precision in precisions:
        dtype, scaled = AUTOCAST_DTYPES[precision], precision == "16-mixed"
        skipped = {}
        if scaled and device.type != "cuda":
            # fp16 autocast on the CPU is tens of times slower than bf16 (no fast fp16 kernels):
            # the smoke test keeps the scaler's code path and autocasts to bf16
            dtype = torch.bfloat16
            skipped["ltrain"] = refusal(precision, device)

        def plain(
            limit: int | None,
            round_index: int = 0,
            dtype: torch.dtype = dtype,
            scaled: bool = scaled,
        ) -> dict:
            model = network().to(device)
            optimizer = resnet_sgd(model.parameters())
            scaler = torch.amp.GradScaler(device.type) if scaled else None
            count = steps if limit is None else min(limit, steps)

            def body() -> int:
                for i in range(count):
                    lo, hi = i * batch, (i + 1) * batch
                    plain_amp_step(model, optimizer, scaler, x[lo:hi], y[lo:hi], dtype)
                return count

            return timed(device, body)

        def ours(limit: int | None, round_index: int = 0, precision: str = precision) -> dict:
            module = workloads._ltrain_module(network(), 0.0, resnet_sgd, 255.0)
            loader = TensorLoader(x, y, batch_size=batch)
            return ltrain_epoch(device, module, root, precision, loader=loader, limit=limit)

        sides = {"plain": plain, "ltrain": ours}
        for name in skipped:
            del sides[name]
        results = alternate(sides, rounds, warmup)
        results.update({name: {"seconds": [], "steps": []} for name in skipped})
        rows.append(
            {
                "row": "resnet",
                "precision": precision,
                "autocast_dtype": str(dtype).removeprefix("torch."),
                "grad_scaler": scaled,
                "batch": batch,
                "sides": results,
                "skipped": skipped,
            }
        )
    return rows


def refusal(precision: str, device: torch.device) -> str:
    """Why ltrain does not run `precision` on `device`, in its own words (the plain side then
    runs alone, autocasting to bf16 with fp16's GradScaler: a smoke test of its code path)."""
    from ltrain.errors import MisconfigurationException
    from ltrain.precision import make_precision

    try:
        make_precision(precision, device)
    except MisconfigurationException as error:
        return f"ltrain side skipped: {error} The plain side autocast to bf16, with the GradScaler."
    raise AssertionError(f"ltrain accepts {precision} on {device}; nothing to skip")


# ---------------------------------------------------------------------- command line
def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name", choices=("tiny", "mnist", "resnet"))
    parser.add_argument(
        "--device",
        default=os.environ.get("GPU_WORKLOADS_DEVICE", "cuda"),
        help="cuda (default), or cpu for a smoke test (also GPU_WORKLOADS_DEVICE=cpu)",
    )
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=None, help="untimed batches per side")
    parser.add_argument("--steps", type=int, default=None, help="tiny: 2000; resnet: 150")
    parser.add_argument("--samples", type=int, default=60_000, help="mnist: training images")
    parser.add_argument("--classic-rounds", type=int, default=3, help="mnist: classic's rounds")
    parser.add_argument("--data", default=None, help="mnist: a folder with the IDX files")
    parser.add_argument("--batch", type=int, default=256, help="resnet: batch size")
    parser.add_argument(
        "--precisions", default="bf16-mixed,16-mixed", help="resnet, comma-separated"
    )
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("no CUDA device here; use --device cpu for a smoke test")
    if device.type == "cpu":
        torch.set_num_threads(1)  # as the CPU rows: a neighbour on the other core disturbs less
    with tempfile.TemporaryDirectory() as root:
        if args.name == "tiny":
            steps = args.steps or 2000
            warmup = 200 if args.warmup is None else args.warmup
            rows = tiny(device, steps, args.rounds, warmup, root)
        elif args.name == "mnist":
            warmup = 20 if args.warmup is None else args.warmup
            classic_rounds = min(args.classic_rounds, args.rounds)
            rows = mnist(device, args.samples, args.rounds, warmup, root, classic_rounds, args.data)
        else:
            steps = args.steps or 150
            warmup = 30 if args.warmup is None else args.warmup
            precisions = [p.strip() for p in args.precisions.split(",") if p.strip()]
            unknown = [p for p in precisions if p not in AUTOCAST_DTYPES]
            if unknown:
                parser.error(f"--precisions: {unknown} (expected {', '.join(AUTOCAST_DTYPES)})")
            rows = resnet(device, steps, args.rounds, warmup, root, args.batch, precisions)
    return {
        "workload": args.name,
        **environment(device),
        "cudnn_benchmark": torch.backends.cudnn.benchmark,
        "rounds": args.rounds,
        "warmup": warmup,
        "rows": rows,
    }


if __name__ == "__main__":
    print(json.dumps(main()))
