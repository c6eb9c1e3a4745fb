"""Console output: one `info` for the lines a run prints, routed through logging.

Lines go to the `ltrain` logger so users can silence them the Lightning way
(`logging.getLogger("ltrain").setLevel(logging.WARNING)`). The handler resolves `sys.stdout` at
emit time (so captured output works) and writes through tqdm, so a line printed while a progress
bar is open does not tear the bar.
"""

from __future__ import annotations

import logging
import os
import sys

log = logging.getLogger("ltrain")


class _StdoutThroughTqdm(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        from tqdm import tqdm

        try:
            tqdm.write(self.format(record), file=sys.stdout)
        except Exception:
            self.handleError(record)


if not log.handlers:
    log.addHandler(_StdoutThroughTqdm())
    log.setLevel(logging.INFO)
    log.propagate = False


def info(message: str) -> None:
    """Print one line of run information; in a data-parallel run only rank 0 prints."""
    if os.environ.get("RANK", "0") == "0":
        log.info(message)
