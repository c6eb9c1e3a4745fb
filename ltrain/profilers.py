"""`Trainer(profiler=...)`: time spent per action (each implemented hook of each callback and of
the module, each training epoch and batch), reported when a run ends.

`trainer.profiler` is always there, so user code may time its own actions with
`with self.trainer.profiler.profile("name"):`; without a profiler that costs next to nothing
(a `PassThroughProfiler`). `SimpleProfiler` keeps every duration and writes a table: printed and
written to the run folder as `fit-profiler.txt` (`validate-profiler.txt`, ...), or, with
Lightning's `filename`, written to `{dirpath}/{stage}-{filename}.txt` only, as Lightning does.
"""

from __future__ import annotations

import contextlib
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ltrain.errors import MisconfigurationException


class Profiler:
    """Times actions; `summary()` is the report of the run so far (empty: nothing to report).

    A subclass implements `start` / `stop` (and `summary`); the trainer times each hook call
    through them unless `timing` is False.
    """

    timing = True

    def __init__(self, dirpath: str | Path | None = None, filename: str | None = None) -> None:
        self.dirpath = dirpath
        self.filename = filename

    def profile(self, action_name: str) -> contextlib.AbstractContextManager[None]:
        """`with profiler.profile("name"):` times the block as action "name"."""
        return self._timed(action_name)

    @contextlib.contextmanager
    def _timed(self, action_name: str) -> Iterator[None]:
        self.start(action_name)
        try:
            yield
        finally:
            self.stop(action_name)

    def start(self, action_name: str) -> None:
        """Nothing to time in the base class."""

    def stop(self, action_name: str) -> None:
        """Nothing to time in the base class."""

    def summary(self) -> str:
        return ""

    def reset(self) -> None:
        """Forget what was timed (each run of the trainer reports its own)."""

    def describe(self, stage: str, run_folder: str) -> None:
        """Print and write the run's report (see the module's docstring)."""
        report = self.summary()
        if not report:
            return
        report = f"{stage.upper()} Profiler Report\n\n{report}"
        if self.filename is None:
            print(report)
            path = Path(run_folder, f"{stage}-profiler.txt")
        else:
            path = Path(self.dirpath or run_folder, f"{stage}-{self.filename}.txt")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(report + "\n")


_NOTHING = contextlib.nullcontext()


class PassThroughProfiler(Profiler):
    """No profiling: `trainer.profiler` when `profiler=None` (its `profile` costs next to nothing,
    so the loop may call it every batch)."""

    timing = False

    def profile(self, action_name: str) -> contextlib.AbstractContextManager[None]:
        return _NOTHING


class SimpleProfiler(Profiler):
    """Every action's calls and durations, as a table sorted by total time (Lightning's columns;
    `extended` is accepted for Lightning's signature: the table always has them all)."""

    def __init__(
        self, dirpath: str | Path | None = None, filename: str | None = None, extended: bool = True
    ) -> None:
        super().__init__(dirpath, filename)
        self.extended = extended
        self.durations: dict[str, list[float]] = defaultdict(list)
        self._started: dict[str, float] = {}
        self._began = time.perf_counter()

    def start(self, action_name: str) -> None:
        if action_name in self._started:
            raise ValueError(f"profiler: {action_name!r} was started and not stopped yet")
        self._started[action_name] = time.perf_counter()

    def stop(self, action_name: str) -> None:
        began = self._started.pop(action_name, None)
        if began is None:
            raise ValueError(f"profiler: {action_name!r} was stopped without being started")
        self.durations[action_name].append(time.perf_counter() - began)

    def reset(self) -> None:
        self.durations.clear()
        self._started.clear()
        self._began = time.perf_counter()

    def summary(self) -> str:
        if not self.durations:
            return ""
        total = time.perf_counter() - self._began
        rows = sorted(
            ((name, sum(d), len(d)) for name, d in self.durations.items()),
            key=lambda row: row[1],
            reverse=True,
        )
        width = max(len("Action"), *(len(name) for name, _, _ in rows))
        header = (
            f"|  {'Action':<{width}}  |  Mean duration (s)  |  Num calls  |  Total time (s)  "
            "|  Percentage %  |"
        )
        line = "-" * len(header)
        lines = [line, header, line]
        calls = sum(n for _, _, n in rows)
        lines.append(
            f"|  {'Total':<{width}}  |  {'-':<17}  |  {calls:<9}  |  {total:<14.5g}  "
            f"|  {100:<12}  |"
        )
        lines.append(line)
        for name, spent, n in rows:
            share = 100 * spent / total if total else 0.0
            lines.append(
                f"|  {name:<{width}}  |  {spent / n:<17.5g}  |  {n:<9}  |  {spent:<14.5g}  "
                f"|  {share:<12.5g}  |"
            )
        lines.append(line)
        return "\n".join(lines)


_NAMES = {"simple": SimpleProfiler}


def make_profiler(profiler: Any) -> Profiler:
    """The profiler `Trainer(profiler=...)` stands for: None, 'simple' or a Profiler object."""
    if profiler is None:
        return PassThroughProfiler()
    if isinstance(profiler, Profiler):
        return profiler
    if isinstance(profiler, str) and profiler in _NAMES:
        return _NAMES[profiler]()
    raise MisconfigurationException(
        f"profiler={profiler!r}: supported are None, 'simple' or a SimpleProfiler object "
        "('advanced' and 'pytorch' are not available in ltrain)"
    )
