"""Instructions per training step, plain loop vs ltrain, counted by valgrind's callgrind.

Wall-clock time on a shared VM moves by tens of percent; instruction counts do not. Each side
runs under `valgrind --tool=callgrind --instr-atstart=no`: nothing is counted until step FIRST
begins, and the count stops when step FIRST + STEPS begins, so start-up, data creation and the end
of the fit are outside the window. Both sides call the same window function at the start of each
step; it switches counting with callgrind's client requests, through a three-line C helper
compiled here (gcc and valgrind's headers are needed).

Under valgrind a program runs about 50 times slower. A progress line that a real run prints every
30 s of wall time would then come every few dozen steps instead of once an epoch, so the ltrain
side's progress bar prints no line within the epoch (its per-batch hook still runs).

About 6 minutes on 2 cores.

    python benchmarks/instructions.py
    python benchmarks/instructions.py --child seed ltrain HELPER.so   # one counted run (internal)
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
# workload -> (first counted step, counted steps); every window holds the same share of CSV rows
WINDOWS = {"seed": (20, 100), "tiny": (50, 400)}

_HELPER_SOURCE = """
#include <valgrind/callgrind.h>
void window_start(void) { CALLGRIND_START_INSTRUMENTATION; CALLGRIND_ZERO_STATS; }
void window_stop(void) { CALLGRIND_DUMP_STATS_AT("window"); CALLGRIND_STOP_INSTRUMENTATION; }
"""


def child(workload: str, side: str, helper: str) -> None:
    """Train FIRST + STEPS + 1 batches of `workload`, counting the window in between."""
    import ctypes

    import torch

    sys.path.insert(0, HERE)
    import workloads

    first, steps = WINDOWS[workload]
    counter = ctypes.CDLL(helper)

    def window(step: int) -> None:
        if step == first:
            counter.window_start()
        elif step == first + steps:
            counter.window_stop()

    torch.set_num_threads(1)
    total = first + steps + 1
    if workload == "seed":
        from ltrain.zoo import TwoBranchMLP

        generator = torch.Generator().manual_seed(0)
        x = torch.randint(0, 256, (total * 128, 1, 28, 28), dtype=torch.uint8, generator=generator)
        y = torch.randint(0, 10, (total * 128,), generator=generator)
        torch.manual_seed(0)
        network, batch, scale, optimizer = TwoBranchMLP(), 128, 255.0, "adam"
    else:
        x, y = workloads.tiny_data(total)
        network, batch, scale, optimizer = workloads.tiny_network(), 32, None, "sgd"
    lr = 1e-3 if optimizer == "adam" else 0.01
    if side == "plain":
        make = torch.optim.Adam if optimizer == "adam" else torch.optim.SGD
        opt = make(network.parameters(), lr=lr)
        for i in range(total):
            window(i)
            xb, yb = x[i * batch : (i + 1) * batch], y[i * batch : (i + 1) * batch]
            workloads.plain_step(network, opt, xb.float() / scale if scale else xb, yb)
        print(json.dumps({"steps": total}))
        return
    import ltrain as pl
    from ltrain.data import TensorLoader

    module = workloads._ltrain_module(network, lr, optimizer, scale, before_step=window)
    with tempfile.TemporaryDirectory() as root:
        trainer = pl.Trainer(
            max_epochs=1,
            accelerator="cpu",
            default_root_dir=root,
            enable_model_summary=False,
            num_sanity_val_steps=0,
            callbacks=[pl.callbacks.TQDMProgressBar(line_seconds=math.inf)],
        )
        trainer.fit(module, TensorLoader(x, y, batch_size=batch))
    print(json.dumps({"steps": trainer.global_step}))


def build_helper(folder: str) -> str:
    if shutil.which("valgrind") is None or shutil.which("gcc") is None:
        sys.exit("error: benchmarks/instructions.py needs valgrind and gcc on PATH")
    source, library = os.path.join(folder, "window.c"), os.path.join(folder, "window.so")
    with open(source, "w") as handle:
        handle.write(_HELPER_SOURCE)
    built = subprocess.run(
        ["gcc", "-shared", "-fPIC", "-O2", "-o", library, source], capture_output=True, text=True
    )
    if built.returncode:
        sys.exit(f"error: could not build the callgrind helper (valgrind headers?): {built.stderr}")
    return library


def counted(workload: str, side: str, helper: str, folder: str) -> int:
    """Instructions in the window of one run."""
    out = os.path.join(folder, f"{workload}.{side}.callgrind")
    subprocess.run(
        ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}",
         sys.executable, __file__, "--child", workload, side, helper],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    with open(out + ".1") as dump:  # the file the window's dump request wrote
        return int(re.search(r"^(?:summary|totals): (\d+)", dump.read(), re.MULTILINE).group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", nargs=3, metavar=("WORKLOAD", "SIDE", "HELPER"))
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    with tempfile.TemporaryDirectory() as folder:
        helper = build_helper(folder)
        runs = [(w, side) for w in WINDOWS for side in ("plain", "ltrain")]
        # counts do not depend on load, so the two cores run two counted processes at once
        with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
            counts = dict(
                zip(runs, pool.map(lambda r: counted(*r, helper, folder), runs), strict=True)
            )
    print("workload | plain loop (instructions/step) | ltrain | ltrain - plain | ratio")
    for workload, (_, steps) in WINDOWS.items():
        plain, ours = counts[workload, "plain"] / steps, counts[workload, "ltrain"] / steps
        print(
            f"{workload} | {plain:,.0f} | {ours:,.0f} | {ours - plain:+,.0f} | {ours / plain:.3f}"
        )


if __name__ == "__main__":
    main()
