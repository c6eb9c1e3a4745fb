"""`make gpu-check`: every check that needs a CUDA GPU, in one run that writes one report.

A GPU is lent to few sessions and for minutes, so this is one script that never stops at the
first failure: each part runs, is timed, and adds its section to the report (`--out`), and the
last thing printed is a summary. The parts:

1. the whole test suite with the CUDA tests enabled; the report lists every skip, and none may
   be for want of a GPU;
2. `ltrain fit` of the seed MLP (configs/mnist.yaml) and of the CNN (configs/mnist_cnn.yaml) on
   MNIST-shaped IDX files, with accelerator 'auto', in every precision: final losses beside
   float32's, and the device the run said it chose;
3. host syncs per training step (`torch.cuda.set_sync_debug_mode('warn')`), with the progress bar
   drawn as on a terminal and the default `log_every_n_steps=50`, for 32-true, bf16-mixed and
   16-mixed (with Adam and with a fused Adam), each sync attributed to the code that asked;
4. the GPU rows of `make bench`, alone on the machine.

Parts 1 and 2 share the machine (neither is timed); parts 3 and 4 run alone.

`--cpu-dry-run` runs the same script without a GPU, small: the precision tests, the fits on the
CPU (accelerator 'auto' must pick it), the GPU rows on the CPU; part 3 needs CUDA and is skipped.
It shows the script works before a lent device's few minutes are spent on it.
"""

from __future__ import annotations

import argparse
import collections
import concurrent.futures
import io
import json
import os
import re
import subprocess
import sys
import tempfile
import textwrap
import time
import traceback
import warnings
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PRECISIONS = ("32-true", "16-mixed", "bf16-mixed", "16-true", "bf16-true")
CONFIGS = {"seed MLP": "configs/mnist.yaml", "CNN": "configs/mnist_cnn.yaml"}


class Report:
    """Sections of text written to the report file as they finish, so a killed run keeps them."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.summary: list[str] = []
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"ltrain GPU check, {time.strftime('%Y-%m-%d %H:%M:%S')}\n")

    def section(self, title: str, body: str) -> None:
        with self.path.open("a") as handle:
            handle.write(f"\n## {title}\n{body.rstrip()}\n")
        print(f"\n## {title}\n{body.rstrip()}", flush=True)

    def note(self, line: str) -> None:
        self.summary.append(line)


def run(
    command: list[str], timeout: float, cwd: Path = ROOT, extra_env: dict | None = None
) -> tuple[int, str, float]:
    """Exit code, stdout+stderr and seconds of `command`; a timeout is exit code 124."""
    start = time.monotonic()
    try:
        done = subprocess.run(
            command,
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=timeout,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(extra_env or {})},
        )
        return done.returncode, done.stdout + done.stderr, time.monotonic() - start
    except subprocess.TimeoutExpired as expired:
        out = (expired.stdout or b"").decode() if isinstance(expired.stdout, bytes) else ""
        return 124, out + f"\n(timed out after {timeout:.0f} s)", time.monotonic() - start


# ---------------------------------------------------------------------- 1. the test suite
def test_suite(workers: int, timeout: float, paths: tuple[str, ...] = ()) -> tuple[str, str]:
    """The suite (or `paths` of it), its skips listed and counted when they want a GPU."""
    # one torch thread per worker: sixteen workers with sixteen threads each fight for the cores
    code, out, seconds = run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-n",
            str(workers),
            "-rfEs",
            "-p",
            "no:cacheprovider",
            *paths,
        ],
        timeout,
        extra_env={"OMP_NUM_THREADS": "1"},
    )
    tail = [line for line in out.splitlines() if line.strip()]
    result = next((line for line in reversed(tail) if re.search(r"\d+ passed", line)), "?")
    skips = [line for line in tail if line.startswith("SKIPPED")]
    failures = [line for line in tail if line.startswith(("FAILED", "ERROR"))]
    for_want_of_gpu = [line for line in skips if re.search(r"cuda|gpu", line, re.IGNORECASE)]
    body = [f"exit code {code}, {seconds:.0f} s, {workers} workers: {result.strip('= ')}"]
    body += ["skipped:"] + [f"  {line}" for line in skips] or ["  none"]
    body += [f"skipped for want of a GPU: {len(for_want_of_gpu)}"]
    if failures:
        body += ["failed:"] + [f"  {line}" for line in failures]
        body += ["", "output (last 12,000 characters):", out[-12_000:]]
    summary = f"tests: {result.strip('= ')}; skipped for want of a GPU: {len(for_want_of_gpu)}" + (
        f"; exit code {code}" if code else ""
    )
    return "\n".join(body), summary


# ---------------------------------------------------------------------- 2. precision fits
def precision_fits(
    data: Path, work: Path, epochs: int, timeout: float, expected: str = "cuda:0"
) -> tuple[str, str]:
    """One `ltrain fit` per config and precision, four at a time; final losses side by side.
    A run on another device than `expected` (what accelerator 'auto' should pick) is a problem."""
    jobs = [(label, config, p) for label, config in CONFIGS.items() for p in PRECISIONS]

    def fit(job: tuple[str, str, str]) -> dict:
        label, config, precision = job
        name = f"{Path(config).stem}-{precision}"
        command = [
            sys.executable, "-m", "ltrain", "fit", str(ROOT / config),
            "--set", f"name={name}", "--set", f"data.root={data}",
            "--set", "data.val_split=0.1", "--set", f"trainer.max_epochs={epochs}",
            "--set", f"trainer.precision={precision}",
            "--set", "trainer.enable_progress_bar=false",
        ]  # fmt: skip
        code, out, seconds = run(command, timeout, cwd=work)
        row = {"config": label, "precision": precision, "code": code, "seconds": seconds}
        device = re.search(r"Device: (\S+), precision: (\S+)", out)
        row["device"] = device.group(1).rstrip(",") if device else "?"
        available = re.search(r"GPU available: .*", out)
        row["banner"] = available.group(0) if available else "?"
        metrics = work / "runs" / name / "version_0" / "metrics.csv"
        if code == 0 and metrics.is_file():
            import pandas as pd

            frame = pd.read_csv(metrics)
            for column in ("train_loss_epoch", "valid_loss", "valid_acc"):
                values = frame[column].dropna() if column in frame else []
                row[column] = float(values.iloc[-1]) if len(values) else float("nan")
            first = frame["train_loss_epoch"].dropna()
            row["first_train_loss_epoch"] = float(first.iloc[0]) if len(first) else float("nan")
        else:
            row["error"] = out.strip().splitlines()[-1] if out.strip() else f"exit code {code}"
        return row

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        rows = list(pool.map(fit, jobs))
    lines = [
        f"{'config':9} {'precision':10} {'device':7} {'epoch 1 loss':>12} {'final loss':>10} "
        f"{'valid loss':>10} {'valid acc':>9} {'s':>5}"
    ]
    problems = []
    for row in rows:
        if "error" in row:
            lines.append(f"{row['config']:9} {row['precision']:10} failed: {row['error']}")
            problems.append(f"{row['config']} {row['precision']}: {row['error']}")
            continue
        lines.append(
            f"{row['config']:9} {row['precision']:10} {row['device']:7} "
            f"{row['first_train_loss_epoch']:12.4f} {row['train_loss_epoch']:10.4f} "
            f"{row['valid_loss']:10.4f} {row['valid_acc']:9.4f} {row['seconds']:5.1f}"
        )
        if row["device"] != expected:
            problems.append(f"{row['config']} {row['precision']}: ran on {row['device']}")
    banners = sorted({row["banner"] for row in rows})
    lines += [f"start-up line (accelerator auto): {' | '.join(banners)}", json.dumps(rows)]
    finals = {(r["config"], r["precision"]): r.get("train_loss_epoch", float("nan")) for r in rows}
    summary = (
        "fits (final train loss, "
        + ", ".join(PRECISIONS)
        + "): "
        + "; ".join(
            f"{label} " + " / ".join(f"{finals[(label, p)]:.4f}" for p in PRECISIONS)
            for label in CONFIGS
        )
    )
    if problems:
        summary += " -- problems: " + "; ".join(problems)
    return "\n".join(lines), summary


def lightning_banner(timeout: float) -> str:
    """What real Lightning prints at the start of a GPU fit, to hold ltrain's line against."""
    script = textwrap.dedent(
        """
        import torch, lightning.pytorch as L
        class M(L.LightningModule):
            def __init__(self):
                super().__init__(); self.layer = torch.nn.Linear(4, 1)
            def training_step(self, batch, batch_idx):
                return self.layer(batch[0]).sum()
            def configure_optimizers(self):
                return torch.optim.SGD(self.parameters(), lr=0.1)
        data = torch.utils.data.TensorDataset(torch.randn(8, 4))
        L.Trainer(max_epochs=1, logger=False, enable_checkpointing=False,
                  enable_progress_bar=False, enable_model_summary=False).fit(
            M(), torch.utils.data.DataLoader(data, batch_size=4))
        """
    )
    with tempfile.TemporaryDirectory() as work:
        code, out, _ = run([sys.executable, "-c", script], timeout, cwd=Path(work))
    lines = [line for line in out.splitlines() if "available" in line or "CUDA_VISIBLE" in line]
    return "\n".join(lines) if code == 0 else f"Lightning fit failed ({code}): {out[-500:]}"


# ---------------------------------------------------------------------- 3. host syncs
def host_syncs(data: Path, work: Path) -> tuple[str, str]:
    """Synchronizing CUDA calls per training step, by where they come from.

    In-process: `set_sync_debug_mode('warn')` turns each synchronizing call into a warning, and
    `warnings.showwarning` sees it while the caller's stack is still there.
    """
    import torch

    import ltrain as pl
    from ltrain.data import MNIST
    from ltrain.zoo import MLPClassifier

    class FusedAdam(MLPClassifier):
        def configure_optimizers(self):
            return torch.optim.Adam(self.parameters(), lr=self.lr, fused=True)

    class Terminal(io.StringIO):
        """stdout as a terminal, so the progress bar draws itself as it does for a user."""

        def isatty(self) -> bool:
            return True

    class SyncRecorder(pl.Callback):
        """Each synchronizing call's call site, and the global step it happened in."""

        def __init__(self) -> None:
            self.sites: collections.Counter[str] = collections.Counter()
            self.steps: dict[int, set[str]] = collections.defaultdict(set)
            self.step = -1

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            self.step = trainer.global_step

        def record(self, message, category, filename, lineno, file=None, line=None):
            if "synchronizing" in str(message):
                site = _call_site(traceback.extract_stack()[:-1])
                self.sites[site] += 1
                self.steps[self.step].add(site)

    lines, summary = [], []
    for precision, module_class in (
        ("32-true", MLPClassifier),
        ("bf16-mixed", MLPClassifier),
        ("16-mixed", MLPClassifier),
        ("16-mixed", FusedAdam),
    ):
        recorder = SyncRecorder()
        pl.seed_everything(0)
        trainer = pl.Trainer(
            accelerator="cuda",
            precision=precision,
            max_epochs=2,
            default_root_dir=str(work / "syncs"),
            callbacks=[recorder],
            enable_checkpointing=False,
            enable_model_summary=False,
            num_sanity_val_steps=0,
            limit_val_batches=0,
        )
        datamodule = MNIST(root=str(data), batch_size=128, val_split=0.1)
        model = module_class(in_features=784)
        stdout, sys.stdout = sys.stdout, Terminal()
        previous_show = warnings.showwarning
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("always")
                warnings.showwarning = recorder.record
                torch.cuda.set_sync_debug_mode("warn")
                try:
                    trainer.fit(model, datamodule=datamodule)
                finally:
                    torch.cuda.set_sync_debug_mode(0)
        finally:
            warnings.showwarning = previous_show
            sys.stdout = stdout
        total_steps = trainer.global_step
        # steady state: after the first step (which creates the optimizer's state), and neither
        # a row being written nor the bar being redrawn
        other_steps = sum(
            step > 0 and any(_kind(site) == "other" for site in step_sites)
            for step, step_sites in recorder.steps.items()
        )
        label = precision + (" fused Adam" if module_class is FusedAdam else "")
        sites = recorder.sites
        per_step = sum(sites.values()) / max(1, total_steps)
        steady = other_steps / max(1, total_steps - 1)
        lines.append(
            f"{label}: {total_steps} steps, {sum(sites.values())} syncs ({per_step:.2f}/step); "
            f"steps with a sync outside rows and bar refreshes: {other_steps} "
            f"({steady:.2f}/step); final loss "
            f"{float(trainer.callback_metrics['train_loss_epoch']):.4f}"
        )
        for site, count in sites.most_common(8):
            lines.append(f"    {count:5d}  [{_kind(site)}] {site}")
        summary.append(f"{label} {steady:.2f}")
    return "\n".join(lines), "host syncs per steady-state step: " + ", ".join(summary)


def _call_site(stack: list[traceback.FrameSummary]) -> str:
    """The innermost frames of the stack in ltrain or in the code that called torch."""
    ours = [f for f in stack if "/ltrain/" in f.filename or "/benchmarks/" in f.filename]
    tail = [f for f in stack if "/warnings.py" not in f.filename][-2:]
    picked = (ours[-2:] if ours else []) + [f for f in tail if f not in ours[-2:]]
    return " <- ".join(f"{Path(f.filename).name}:{f.lineno} {f.name}" for f in reversed(picked))


def _kind(site: str) -> str:
    if any(name in site for name in ("_log_row", "_check_losses", "_finish_train_epoch")):
        return "row"  # a row written, or the epoch's end (its row and its nan/inf check)
    if "progress" in site or "get_metrics" in site:
        return "bar"
    return "other"


# ---------------------------------------------------------------------- 4. bench rows
def bench_rows(timeout: float, quick: bool, extra_env: dict | None = None) -> tuple[str, str]:
    command = [sys.executable, str(HERE / "bench.py"), "--gpu-only"] + (
        ["--quick"] if quick else []
    )
    code, out, seconds = run(command, timeout, extra_env=extra_env)
    table = out[out.find("workload") :] if "workload" in out else out[-4000:]
    ratios = [
        line.split("|")[0].strip()[:40] + ": " + line.split("|")[3].strip()
        for line in table.splitlines()
        if line.count("|") >= 4 and "workload" not in line and "---" not in line
    ]
    summary = "bench: " + ("; ".join(ratios) if code == 0 else f"failed (exit code {code})")
    return f"exit code {code}, {seconds:.0f} s\n{out[-6000:]}", summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="gpu-check.txt", help="the report file")
    parser.add_argument("--workers", type=int, default=min(12, os.cpu_count() or 2))
    parser.add_argument("--samples", type=int, default=12_000, help="MNIST-shaped training images")
    parser.add_argument("--epochs", type=int, default=3, help="epochs of each precision fit")
    parser.add_argument("--skip", default="", help="parts to skip, e.g. 'tests,bench'")
    parser.add_argument("--quick", action="store_true", help="the bench rows' smoke test")
    parser.add_argument(
        "--cpu-dry-run",
        action="store_true",
        help="without a GPU: every part that can run on the CPU, small, to try the script "
        "before a device's minutes are spent (the precision tests only, syncs skipped)",
    )
    args = parser.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    import torch

    report = Report(Path(args.out).resolve())
    dry = args.cpu_dry_run
    if dry:
        args.samples, args.epochs, args.quick, args.workers = 1_200, 1, True, 2
        skip.add("syncs")
        report.section("machine", f"CPU dry run: {os.cpu_count()} cores, torch {torch.__version__}")
        report.note("syncs: skipped (set_sync_debug_mode needs CUDA)")
    elif not torch.cuda.is_available():
        report.section("GPU", "no CUDA GPU here: nothing to check (--cpu-dry-run tries the script)")
        sys.exit(2)
    else:
        properties = torch.cuda.get_device_properties(0)
        report.section(
            "machine",
            f"{torch.cuda.get_device_name(0)}, {properties.total_memory / 2**30:.0f} GiB, "
            f"capability {properties.major}.{properties.minor}; torch {torch.__version__} "
            f"(CUDA {torch.version.cuda}), Python {sys.version.split()[0]}, {os.cpu_count()} cores",
        )
    sys.path.insert(0, str(HERE))
    from workloads import write_mnist_idx

    tests = ("tests/test_precision.py", "tests/test_host_syncs.py") if dry else ()
    with tempfile.TemporaryDirectory() as scratch:
        data, work = Path(scratch) / "data", Path(scratch) / "work"
        work.mkdir()
        write_mnist_idx(str(data), args.samples, args.samples // 6)
        parts: dict[str, concurrent.futures.Future] = {}
        with concurrent.futures.ThreadPoolExecutor(3) as pool:
            if "tests" not in skip:
                parts["tests"] = pool.submit(test_suite, args.workers, 420, tests)
            if "fits" not in skip:
                expected = "cpu" if dry else "cuda:0"
                parts["fits"] = pool.submit(precision_fits, data, work, args.epochs, 240, expected)
                parts["lightning"] = pool.submit(lightning_banner, 120)
            for name, future in parts.items():
                try:
                    result = future.result()
                except Exception:  # a broken part must not hide the others' results
                    result = (traceback.format_exc(), f"{name}: crashed")
                if isinstance(result, str):
                    report.section("Lightning's start-up lines on this GPU", result)
                    report.note(f"Lightning says: {' / '.join(result.splitlines()[:1])}")
                else:
                    report.section(name, result[0])
                    report.note(result[1])
        bench_env = {"GPU_WORKLOADS_DEVICE": "cpu"} if dry else None
        for name, part in (
            ("syncs", lambda: host_syncs(data, work)),
            ("bench", lambda: bench_rows(300, args.quick, bench_env)),
        ):
            if name in skip:
                continue
            try:
                body, line = part()
            except Exception:
                body, line = traceback.format_exc(), f"{name}: crashed"
            report.section(name, body)
            report.note(line)
    report.section("summary", "\n".join(report.summary))


if __name__ == "__main__":
    main()
