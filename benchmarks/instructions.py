"""Instructions per training step, plain loop vs ltrain, counted by valgrind's callgrind.

Wall-clock time on a shared VM moves by tens of percent; instruction counts do not. Each workload
runs for a short and a long number of steps under `valgrind --tool=callgrind`; the difference
divided by the extra steps is the cost of one step, start-up and data set creation cancelled out.
About 30 minutes on 2 cores (torch's import alone is billions of instructions under valgrind).

    python benchmarks/instructions.py            # both workloads
    python benchmarks/instructions.py --child seed ltrain 250   # one counted run (internal)
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
STEPS = {"seed": (50, 250), "tiny": (200, 1200)}


def child(workload: str, side: str, steps: int) -> None:
    """Train `steps` batches of `workload` on fixed data (the same for every step count)."""
    import torch
    from torch.nn import functional as F

    sys.path.insert(0, HERE)
    import workloads

    torch.set_num_threads(1)
    generator = torch.Generator().manual_seed(0)
    if workload == "seed":
        from ltrain.zoo import TwoBranchMLP

        x = torch.randint(0, 256, (60_000, 1, 28, 28), dtype=torch.uint8, generator=generator)
        y = torch.randint(0, 10, (60_000,), generator=generator)
        torch.manual_seed(0)
        network, batch, scale, optimizer = TwoBranchMLP(), 128, 255.0, "adam"
    else:
        x, y = workloads.tiny_data(max(STEPS["tiny"]))
        network, batch, scale, optimizer = workloads.tiny_network(), 32, None, "sgd"
    if side == "plain":
        make = torch.optim.Adam if optimizer == "adam" else torch.optim.SGD
        opt = make(network.parameters(), lr=1e-3 if optimizer == "adam" else 0.01)
        for i in range(steps):
            xb, yb = x[i * batch : (i + 1) * batch], y[i * batch : (i + 1) * batch]
            xb = xb.float() / scale if scale else xb
            logits = network(xb)
            loss = F.cross_entropy(logits, yb)
            (logits.argmax(1) == yb).float().mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        return
    import ltrain as pl
    from ltrain.data import TensorLoader

    lr = 1e-3 if optimizer == "adam" else 0.01
    module = workloads._ltrain_module(network, lr, optimizer, scale)
    with tempfile.TemporaryDirectory() as root:
        trainer = pl.Trainer(
            max_epochs=1,
            limit_train_batches=steps,
            accelerator="cpu",
            default_root_dir=root,
            enable_model_summary=False,
            num_sanity_val_steps=0,
        )
        trainer.fit(module, TensorLoader(x, y, batch_size=batch))


def counted(workload: str, side: str, steps: int) -> int:
    done = subprocess.run(
        ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", sys.executable,
         __file__, "--child", workload, side, str(steps)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return int(re.search(r"Collected : (\d+)", done.stderr).group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", nargs=3, metavar=("WORKLOAD", "SIDE", "STEPS"))
    args = parser.parse_args()
    if args.child:
        workload, side, steps = args.child
        child(workload, side, int(steps))
        return
    print("workload | plain loop (instructions/step) | ltrain | ratio")
    for workload, (short, long) in STEPS.items():
        per_step = {
            side: (counted(workload, side, long) - counted(workload, side, short)) / (long - short)
            for side in ("plain", "ltrain")
        }
        ratio = per_step["ltrain"] / per_step["plain"]
        print(f"{workload} | {per_step['plain']:,.0f} | {per_step['ltrain']:,.0f} | {ratio:.3f}")


if __name__ == "__main__":
    main()
