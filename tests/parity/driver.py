"""Runs parity scenarios under one framework, in this one process.

`python driver.py lightning|ltrain OUT [NAME ...]`: each scenario runs in `OUT/FRAMEWORK/NAME/`
(its working directory) after `pl.seed_everything(0)`, and its observations go to
`OUT/FRAMEWORK/NAME.pt`. A scenario that raises records the error instead; the others still run.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/, for `parity.*`

import torch  # noqa: E402

from parity.scenarios import SCENARIOS  # noqa: E402

MODULES = {"lightning": "lightning.pytorch", "ltrain": "ltrain"}


def main() -> None:
    framework, out, *names = sys.argv[1:]
    warnings.filterwarnings("ignore")
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    pl = importlib.import_module(MODULES[framework])
    for name in names or SCENARIOS:
        root = Path(out, framework, name).resolve()
        root.mkdir(parents=True)
        os.chdir(root)
        pl.seed_everything(0)
        try:
            seen = SCENARIOS[name](pl, root)
        except Exception as error:  # the scenario's outcome: compared like any observation
            seen = {
                "error": f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
            }
        torch.save(seen, Path(out, framework, f"{name}.pt"))


if __name__ == "__main__":
    main()
