"""`make bench`: ltrain against a plain PyTorch loop (and Lightning, when installed), side by side.

Every measurement is a fresh process (workloads.py); the two sides of a comparison alternate for
several rounds, and the table gives medians and the median of the per-round ratios, so a slow
moment hits both sides instead of one. Before each round the script waits (up to a minute) for the
machine to be quiet and prints the load it saw. Nothing here asserts a timing: it prints.

With CUDA, the GPU rows follow (gpu_workloads.py): one fresh process per workload, in which the
sides alternate after an untimed warm-up (that module's docstring says why that is sound on a GPU);
`--gpu-only` runs only them. GPU_WORKLOADS_DEVICE=cpu runs them on the CPU instead, at whatever
size is asked (use it with --quick): a smoke test of the GPU rows on a machine without a GPU.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def run(name: str, *args: object, env: dict | None = None, script: str = "workloads.py") -> dict:
    done = subprocess.run(
        [sys.executable, os.path.join(HERE, script), name, *map(str, args)],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
    )
    if done.returncode != 0:
        raise RuntimeError(f"{name} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def busy_fraction(seconds: float = 0.5) -> float:
    """Share of all cores' time spent by any process over `seconds` (ours is idle meanwhile)."""

    def read() -> tuple[int, int]:
        with open("/proc/stat") as stat:
            fields = [int(v) for v in stat.readline().split()[1:]]
        return sum(fields), fields[3] + fields[4]

    total0, idle0 = read()
    time.sleep(seconds)
    total1, idle1 = read()
    return 1 - (idle1 - idle0) / max(1, total1 - total0)


def wait_until_quiet(patience: float, limit: float = 0.1) -> float:
    """Wait (at most `patience` seconds) until other processes use < `limit` of the cores."""
    deadline = time.monotonic() + patience
    while True:
        busy = busy_fraction()
        if busy < limit or time.monotonic() > deadline:
            return busy


def alternate(
    sides: list[tuple[str, tuple]], rounds: int, patience: float
) -> tuple[list[list[dict]], list[float]]:
    """Each side's results, the sides run in turn (A B A B ...), and the load before each round."""
    results: list[list[dict]] = [[] for _ in sides]
    loads = []
    for _ in range(rounds):
        loads.append(wait_until_quiet(patience))
        for i, (name, args) in enumerate(sides):
            results[i].append(run(name, *args))
    return results, loads


def column(results: list[dict], key: str) -> list[float]:
    return [r[key] for r in results]


def stats(values: list[float], digits: int = 3) -> str:
    low, mid, high = min(values), statistics.median(values), max(values)
    return f"{mid:.{digits}f} ({low:.{digits}f}-{high:.{digits}f})"


def paired(ours: list[float], base: list[float]) -> float:
    return statistics.median(o / b for o, b in zip(ours, base, strict=True))


def startup_seconds(args: list[str], repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run(args, capture_output=True, cwd=ROOT, check=True)
        best = min(best, time.perf_counter() - start)
    return best


Row = tuple[str, str, str, str, str]


def per_step(side: dict) -> list[float]:
    """Seconds per step of each round of one side of a GPU row."""
    return [t / n for t, n in zip(side["seconds"], side["steps"], strict=True)]


def throughput(side: dict) -> list[float]:
    return [1 / t for t in per_step(side)]


def overhead_us(ours: dict, base: dict) -> float:
    """Median over the rounds of ltrain's extra time per step, in microseconds."""
    a, b = per_step(ours), per_step(base)
    n = min(len(a), len(b))
    return statistics.median((x - y) * 1e6 for x, y in zip(a[:n], b[:n], strict=True))


def gpu_rows(args: argparse.Namespace, device: str, patience: float) -> tuple[list[Row], bool]:
    """The GPU rows, one fresh process per workload (two rows for ResNet-18's two precisions).

    Returns the rows and whether a workload failed (its row then says so; the others still run).
    """
    cpu = device == "cpu"  # GPU_WORKLOADS_DEVICE=cpu: a smoke test on a machine without a GPU
    jobs = {
        "tiny": (
            "--steps", 50 if args.quick else args.steps, "--warmup", 5 if args.quick else 200,
            "--rounds", args.rounds,
        ),
        "mnist": (
            "--samples", args.samples, "--warmup", 3 if args.quick else 20,
            "--rounds", args.rounds, "--classic-rounds", min(args.rounds, 3),
        ),
        "resnet": (
            "--steps", args.resnet_steps, "--warmup", 2 if args.quick else 30,
            "--rounds", args.rounds, "--batch", 64 if cpu else 256,
            "--precisions", "bf16-mixed,16-mixed",
        ),
    }  # fmt: skip
    rows: list[Row] = []
    failed = False
    started = time.perf_counter()
    for name, options in jobs.items():
        try:  # the machine is not shared, so no waiting: the load is printed
            load = f"{wait_until_quiet(min(patience, 10.0)):.0%}"
        except OSError:  # no /proc/stat
            load = "unknown"
        began = time.perf_counter()
        try:
            result = run(name, *options, "--device", device, script="gpu_workloads.py")
        except RuntimeError as error:
            print(f"  GPU {name}: {error}")
            rows.append((f"GPU {name}", "failed (error above)", "", "", ""))
            failed = True
            continue
        where = f"{result['device_name']}, torch {result['torch']}"
        print(
            f"  GPU {name}: {where}; {time.perf_counter() - began:.1f} s with start-up, load "
            f"before {load}; warm-up {result['warmup']} batches per side, {result['rounds']} "
            f"rounds in one process, cuDNN benchmark {'on' if result['cudnn_benchmark'] else 'off'}"
        )
        for row in result["rows"]:
            rows.extend(GPU_ROW_FORMATS[row["row"]](row, where))
    print(f"  GPU section: {time.perf_counter() - started:.1f} s, {len(jobs)} processes")
    return rows, failed


def tiny_gpu_row(row: dict, where: str) -> list[Row]:
    ours, plain = row["sides"]["ltrain"], row["sides"]["plain"]
    steps = plain["steps"][0]
    return [
        (
            f"GPU tiny MLP 32-64-4, batch {row['batch']}, {steps} steps, data on the device, "
            f"{row['precision']} (steps/s)",
            stats(throughput(ours), 0),
            stats(throughput(plain), 0),
            f"{paired(throughput(ours), throughput(plain)):.3f}",
            f"{overhead_us(ours, plain):+.1f} us/step (host-bound: ltrain's overhead); {where}",
        )
    ]


def mnist_gpu_row(row: dict, where: str) -> list[Row]:
    sides = row["sides"]
    ours, classic, resident = sides["ltrain"], sides["classic"], sides["resident"]
    mine = ours["seconds"]
    with_classic = mine[: len(classic["seconds"])]  # the classic recipe ran in the first rounds
    return [
        (
            f"GPU seed two-branch MLP, {row['samples']} MNIST-shaped, batch {row['batch']}, "
            f"1 epoch: `ltrain.data.MNIST` vs classic recipe (s)",
            stats(mine),
            stats(classic["seconds"]),
            f"{paired(classic['seconds'], with_classic):.2f}x faster",
            f"classic: ToTensor + DataLoader(128, shuffle), .to(device) per batch, "
            f"{len(classic['seconds'])} rounds; {where}",
        ),
        (
            "  same, plain loop on the same device-resident uint8 tensors (s)",
            stats(mine),
            stats(resident["seconds"]),
            f"{paired(resident['seconds'], mine):.3f}",
            f"{overhead_us(ours, resident):+.1f} us/step; classic recipe "
            f"{paired(classic['seconds'], resident['seconds'][: len(classic['seconds'])]):.2f}x "
            "slower than this loop",
        ),
    ]


def resnet_gpu_row(row: dict, where: str) -> list[Row]:
    ours, plain = row["sides"]["ltrain"], row["sides"]["plain"]
    label = (
        f"GPU ResNet-18, CIFAR-shaped 3x32x32, batch {row['batch']}, {plain['steps'][0]} steps, "
        f"{row['precision']} (steps/s)"
    )
    if row["skipped"].get("ltrain"):
        return [(label, "skipped", stats(throughput(plain), 1), "", row["skipped"]["ltrain"])]
    return [
        (
            label,
            stats(throughput(ours), 1),
            stats(throughput(plain), 1),
            f"{paired(throughput(ours), throughput(plain)):.3f} (target >= 0.98)",
            f"{overhead_us(ours, plain):+.0f} us/step; SGD momentum, "
            f"{'GradScaler, ' if row['grad_scaler'] else ''}autocast {row['autocast_dtype']}; "
            f"{where}",
        )
    ]


GPU_ROW_FORMATS = {"tiny": tiny_gpu_row, "mnist": mnist_gpu_row, "resnet": resnet_gpu_row}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=2000, help="tiny MLP steps per run")
    parser.add_argument("--samples", type=int, default=60_000, help="MNIST-shaped samples")
    parser.add_argument("--epochs", type=int, default=5, help="epochs for the accuracy comparison")
    parser.add_argument(
        "--resnet-steps", type=int, default=150, help="GPU ResNet-18 steps per side per round"
    )
    parser.add_argument(
        "--quick", action="store_true", help="one small round of each (a smoke test)"
    )
    parser.add_argument(
        "--gpu-only", action="store_true", help="only the GPU rows (the GPU check runs these)"
    )
    args = parser.parse_args()
    if args.quick:  # a smoke test of every row: timings mean nothing, so no waiting either
        args.rounds, args.steps, args.samples, args.epochs = 1, 200, 2_000, 1
        args.resnet_steps = 5
    patience = 0.0 if args.quick else 60.0  # seconds a round waits for a quiet machine

    import torch

    import ltrain

    print(
        f"machine: {platform.node()}, {os.cpu_count()} cores, {platform.processor() or platform.machine()}"
    )
    print(
        f"python {platform.python_version()}, torch {torch.__version__}, ltrain {ltrain.__version__}, "
        f"cuda: {torch.cuda.is_available()}; medians over {args.rounds} rounds (min-max)"
    )
    rows = [] if args.gpu_only else cpu_rows(args, patience)
    gpu_device = os.environ.get("GPU_WORKLOADS_DEVICE") or (
        "cuda" if torch.cuda.is_available() else None
    )
    failed = False
    if gpu_device is None:
        rows.append(("GPU rows (CUDA, 16-mixed, bf16-mixed)", "no GPU on this machine", "", "", ""))
    else:
        more, failed = gpu_rows(args, gpu_device, patience)
        rows.extend(more)

    headers = ("workload", "ltrain", "baseline", "ratio", "overhead / note")
    widths = [max(len(r[i]) for r in [headers, *rows]) for i in range(5)]
    print()
    for row in [headers, tuple("-" * w for w in widths), *rows]:
        print(" | ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    if failed:
        sys.exit("a GPU workload failed: its row says which, its error is printed above")


def cpu_rows(args: argparse.Namespace, patience: float) -> list[Row]:
    """The CPU rows: every measurement a fresh process (workloads.py)."""
    rows: list[Row] = []

    # 1a. engine overhead, tiny MLP
    (plain, ours), loads = alternate(
        [("tiny_plain", (args.steps,)), ("tiny_ltrain", (args.steps,))], args.rounds, patience
    )
    plain_ms = [v * 1e3 for v in column(plain, "seconds_per_step")]
    ours_ms = [v * 1e3 for v in column(ours, "seconds_per_step")]
    overhead = statistics.median(o - p for o, p in zip(ours_ms, plain_ms, strict=True))
    rows.append(
        (
            f"tiny MLP 32-64-4, batch 32, {args.steps} steps, CPU 1 thread (ms/step)",
            stats(ours_ms),
            stats(plain_ms),
            f"{paired(ours_ms, plain_ms):.3f}",
            f"{overhead:+.3f} ms/step (target <= +0.15)",
        )
    )
    print(f"  load before tiny rounds: {', '.join(f'{b:.0%}' for b in loads)}")

    # 1b. engine overhead, seed MLP on MNIST-shaped tensors. A 1-s epoch on a shared VM moves by
    # tens of percent between runs, more than the 3 % this row resolves: it gets twice the rounds.
    seed_rounds = args.rounds if args.quick else 2 * args.rounds + 1
    (plain, ours), loads = alternate(
        [("seed_plain", (args.samples,)), ("seed_ltrain", (args.samples,))], seed_rounds, patience
    )
    plain, ours = column(plain, "seconds"), column(ours, "seconds")
    steps = -(-args.samples // 128)
    overhead = statistics.median((o - p) / steps * 1e3 for o, p in zip(ours, plain, strict=True))
    rows.append(
        (
            f"seed two-branch MLP, {args.samples} samples, batch 128, 1 epoch, "
            f"{seed_rounds} rounds (s)",
            stats(ours),
            stats(plain),
            f"{paired(ours, plain):.3f} (target <= 1.03)",
            f"{overhead:+.3f} ms/step",
        )
    )
    print(f"  load before seed rounds: {', '.join(f'{b:.0%}' for b in loads)}")

    # 2. data path: the MNIST config against the classic recipe
    with tempfile.TemporaryDirectory() as data:
        run("write_mnist_idx", data, args.samples, args.samples // 6)
        data_rounds = max(1, min(args.rounds, 3))
        (classic_runs, preloaded_runs, config_runs), loads = alternate(
            [
                ("classic_recipe", (data,)),
                ("preloaded_plain", (data,)),
                ("ltrain_mnist_config", (data,)),
            ],
            data_rounds,
            patience,
        )
        # accuracy after the whole recipe (5 epochs), once per side: one epoch is too noisy
        # both sides train on all 60,000 images (no validation hold-out on the ltrain side);
        # --quick reports the timed runs' one-epoch accuracy instead of training again
        if args.quick:
            accuracy = {"classic": classic_runs[0], "ltrain": config_runs[0]}
        else:
            accuracy = {
                "classic": run("classic_recipe", data, args.epochs),
                "ltrain": run("ltrain_mnist_config", data, args.epochs, 0),
            }
    classic, preloaded = column(classic_runs, "seconds"), column(preloaded_runs, "seconds")
    config = column(config_runs, "seconds")
    rows.append(
        (
            "MNIST-shaped epoch: `ltrain fit configs/mnist.yaml` vs classic recipe, plain loop (s)",
            stats(config),
            stats(classic),
            f"{paired(classic, config):.2f}x faster (target >= 5)",
            f"test accuracy {accuracy['ltrain']['accuracy']:.3f} vs "
            f"{accuracy['classic']['accuracy']:.3f} "
            + (
                "(--quick: one epoch, not comparable)"
                if args.quick
                else f"after {args.epochs} epochs on the same images (target +/- 0.005)"
            ),
        )
    )
    rows.append(
        (
            "  same, plain loop on preloaded tensors vs classic recipe (s)",
            stats(preloaded),
            stats(classic),
            f"{paired(classic, preloaded):.2f}x faster",
            f"ltrain within {paired(config, preloaded):.2f}x of it",
        )
    )
    print(f"  load before data-path rounds: {', '.join(f'{b:.0%}' for b in loads)}")

    # 3. data-parallel: 1 vs 2 CPU processes, the same total batch
    ddp_samples = max(args.samples // 3, 1_000)
    (one, two), loads = alternate(
        [("ddp_seed", (1, ddp_samples)), ("ddp_seed", (2, ddp_samples))],
        max(1, args.rounds // 2),
        patience,
    )
    one, two = column(one, "seconds"), column(two, "seconds")
    rows.append(
        (
            f"DDP: seed MLP, {ddp_samples} samples, total batch 128, 2 CPU processes vs 1 (s)",
            stats(two),
            stats(one),
            f"{paired(two, one):.3f}",
            "gloo, 1 thread per process; 2 cores: overhead, not speed-up",
        )
    )
    print(f"  load before DDP rounds: {', '.join(f'{b:.0%}' for b in loads)}")

    # 4. start-up
    repeats = 1 if args.quick else 5
    ltrain_cli = [sys.executable, "-m", "ltrain"]
    for label, command in (
        ("`ltrain --help`", [*ltrain_cli, "--help"]),
        ("`ltrain fit --help`", [*ltrain_cli, "fit", "--help"]),
        ("`ltrain config configs/digits.yaml`", [*ltrain_cli, "config", "configs/digits.yaml"]),
        (
            "`ltrain fit configs/digits.yaml --print_config`",
            [*ltrain_cli, "fit", "configs/digits.yaml", "--print_config"],
        ),
    ):
        rows.append(
            (
                f"start-up: {label} (s, best of {repeats})",
                f"{startup_seconds(command, repeats):.3f}",
                "",
                "",
                "target <= 0.3",
            )
        )
    rows.append(
        (
            f"start-up: `import ltrain` vs `import torch` (s, best of {repeats})",
            f"{startup_seconds([sys.executable, '-c', 'import ltrain'], repeats):.3f}",
            f"{startup_seconds([sys.executable, '-c', 'import torch'], repeats):.3f}",
            "",
            "",
        )
    )

    # 5. hyperparameter search
    rows.extend(search_rows(args, patience))

    # 6. peers
    lightning = run("lightning_installed")
    note = (
        f"installed ({lightning['version']}), not run by this harness yet"
        if lightning["installed"]
        else "not installed"
    )
    rows.append(("PyTorch Lightning, same workloads", note, "", "", ""))
    return rows


def search_rows(args: argparse.Namespace, patience: float) -> list[Row]:
    """`ltrain search` on the digits config: 12 trials with the median pruner against none (what
    pruning saves), and on 2 processes against 1; the epochs trained and the best valid_acc too."""
    try:
        import optuna
    except ImportError:
        return [
            ("search: 12 trials", "optuna not installed (pip install 'ltrain[search]')", "", "", "")
        ]
    trials, epochs = (4, 4) if args.quick else (12, 100)
    sides = {
        "median, 1 job": ("median", 1),
        "none, 1 job": ("none", 1),
        "median, 2 jobs": ("median", 2),
    }
    seconds: dict[str, list[float]] = {side: [] for side in sides}
    trained: dict[str, list[int]] = {side: [] for side in sides}
    best: dict[str, list[float]] = {side: [] for side in sides}
    for _ in range(1 if args.quick else 2):
        wait_until_quiet(patience)
        for side, (pruner, jobs) in sides.items():
            with tempfile.TemporaryDirectory() as folder:
                command = [
                    sys.executable,
                    "-m",
                    "ltrain",
                    "search",
                    os.path.join(ROOT, "configs", "digits.yaml"),
                ]
                command += [
                    "--space",
                    "model.lr=loguniform(1e-4,1e-1)",
                    "--space",
                    "data.batch_size=32,64,128",
                ]
                command += [
                    "--set",
                    f"trainer.max_epochs={epochs}",
                    "--set",
                    "trainer.enable_progress_bar=false",
                ]
                command += ["--trials", str(trials), "--pruner", pruner, "--jobs", str(jobs)]
                start = time.perf_counter()
                done = subprocess.run(command, cwd=folder, capture_output=True, text=True)
                seconds[side].append(time.perf_counter() - start)
                if done.returncode != 0:
                    raise RuntimeError(f"search failed:\n{done.stderr[-2000:]}")
                study = optuna.load_study(
                    study_name="digits-mlp", storage=f"sqlite:///{folder}/runs/digits-mlp/search.db"
                )
                trained[side].append(sum(len(t.intermediate_values) for t in study.trials))
                best[side].append(study.best_value)
    label = f"search: digits, {trials} trials x up to {epochs} epochs"

    def note(side: str) -> str:
        return f"{statistics.median(trained[side]):.0f} epochs trained, best valid_acc {max(best[side]):.3f}"

    pruned, full, two = seconds["median, 1 job"], seconds["none, 1 job"], seconds["median, 2 jobs"]
    return [
        (
            f"{label}: median pruner vs none, 1 job (s)",
            stats(pruned),
            stats(full),
            f"{paired(pruned, full):.3f}",
            f"{note('median, 1 job')} vs {note('none, 1 job')}",
        ),
        (
            f"{label}: 2 jobs vs 1, median pruner (s)",
            stats(two),
            stats(pruned),
            f"{paired(two, pruned):.3f}",
            f"{note('median, 2 jobs')}; 2 cores, 1 thread per job",
        ),
    ]


if __name__ == "__main__":
    main()
