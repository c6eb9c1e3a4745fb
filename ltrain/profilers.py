"""`Trainer(profiler=...)`: time spent per action (each implemented hook of each callback and of
the module, each training epoch and batch), reported when a run ends.

`trainer.profiler` is always there, so user code may time its own actions with
`with self.trainer.profiler.profile("name"):`; without a profiler that costs next to nothing
(a `PassThroughProfiler`). `SimpleProfiler` keeps every duration and writes a table: printed and
written to the run folder as `fit-profiler.txt` (`validate-profiler.txt`, ...), or, with
Lightning's `filename`, written to `{dirpath}/{stage}-{filename}.txt` only, as Lightning does.
`AdvancedProfiler` runs cProfile in each action and reports its functions per action;
`PyTorchProfiler` runs `torch.profiler` over the run, each action a named range, and besides its
table writes a Chrome trace (`{stage}-profiler.pt.trace.json`) to open in Perfetto
(ui.perfetto.dev), chrome://tracing or TensorBoard's profiler plugin.
"""

from __future__ import annotations

import contextlib
import cProfile
import io
import os
import pstats
import tempfile
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

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
            folder, name = Path(run_folder), f"{stage}-profiler"
        else:
            folder, name = Path(self.dirpath or run_folder), f"{stage}-{self.filename}"
        folder.mkdir(parents=True, exist_ok=True)
        Path(folder, f"{name}.txt").write_text(report + "\n")
        self.save_files(folder, name)

    def save_files(self, folder: Path, name: str) -> None:
        """Files besides the report (`name` is the report's, without its suffix); none here."""


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


class AdvancedProfiler(Profiler):
    """cProfile in each action: its functions' calls and times, per action (Lightning's class).

    Nested actions (a hook inside a training batch) are profiled apart: while one runs, the
    action around it pauses, so each action's table holds its own work. `line_count_restriction`
    is pstats' (an int: that many lines; a float: that fraction); `dump_stats=True` also writes
    each action's raw stats beside the report (`{report name}-{action}.prof`, for snakeviz).
    """

    def __init__(
        self,
        dirpath: str | Path | None = None,
        filename: str | None = None,
        line_count_restriction: float = 1.0,
        dump_stats: bool = False,
    ) -> None:
        super().__init__(dirpath, filename)
        self.line_count_restriction = line_count_restriction
        self.dump_stats = dump_stats
        self.profiles: dict[str, cProfile.Profile] = {}
        self._running: list[str] = []  # the actions started and not stopped, innermost last

    def start(self, action_name: str) -> None:
        if action_name in self._running:
            raise ValueError(f"profiler: {action_name!r} was started and not stopped yet")
        if self._running:
            self.profiles[self._running[-1]].disable()
        self._running.append(action_name)
        self.profiles.setdefault(action_name, cProfile.Profile()).enable()

    def stop(self, action_name: str) -> None:
        if not self._running or self._running[-1] != action_name:
            raise ValueError(f"profiler: {action_name!r} was stopped without being started last")
        self.profiles[self._running.pop()].disable()
        if self._running:
            self.profiles[self._running[-1]].enable()

    def reset(self) -> None:
        for name in self._running:
            self.profiles[name].disable()
        self.profiles = {}
        self._running = []

    def summary(self) -> str:
        parts = []
        for name, profile in self.profiles.items():
            text = io.StringIO()
            stats = pstats.Stats(profile, stream=text).strip_dirs().sort_stats("cumulative")
            stats.print_stats(self.line_count_restriction)
            parts.append(f"Profile stats for: {name}\n{text.getvalue()}")
        return "\n".join(parts)

    def save_files(self, folder: Path, name: str) -> None:
        if self.dump_stats:
            for action, profile in self.profiles.items():
                profile.dump_stats(folder / f"{name}-{action}.prof")


class PyTorchProfiler(Profiler):
    """`torch.profiler` over the run: each action is a named range in the trace; the report is
    torch's table of operators (`row_limit` rows sorted by `sort_by_key`, default
    `cpu_time_total`; `table_kwargs` go to its `table()`), and `export_to_chrome` writes the
    trace. Other keyword arguments go to `torch.profiler.profile` (`activities`,
    `record_shapes`, `profile_memory`, `with_stack`, `schedule`: a schedule steps with the
    training batches)."""

    def __init__(
        self,
        dirpath: str | Path | None = None,
        filename: str | None = None,
        group_by_input_shapes: bool = False,
        export_to_chrome: bool = True,
        row_limit: int = 20,
        sort_by_key: str | None = None,
        table_kwargs: dict[str, Any] | None = None,
        **profiler_kwargs: Any,
    ) -> None:
        super().__init__(dirpath, filename)
        self.group_by_input_shapes = group_by_input_shapes
        self.export_to_chrome = export_to_chrome
        self.row_limit = row_limit
        self.sort_by_key = sort_by_key or "cpu_time_total"
        self.table_kwargs = table_kwargs or {}
        self.profiler_kwargs = profiler_kwargs
        self.profiler: torch.profiler.profile | None = None  # the current run's, once started
        self._ranges: dict[str, contextlib.ExitStack] = {}
        self._finished = False
        self._traces: list[str] = []  # each recorded cycle's Chrome trace, as torch hands it over

    def start(self, action_name: str) -> None:
        if self.profiler is None:
            # a schedule's cycles are kept for the report (torch keeps only the last one)
            kwargs = {"acc_events": "schedule" in self.profiler_kwargs, **self.profiler_kwargs}
            if self.export_to_chrome:
                kwargs.setdefault("on_trace_ready", self._keep_trace)
            self.profiler = torch.profiler.profile(**kwargs)
            self.profiler.__enter__()
        if action_name in self._ranges:
            raise ValueError(f"profiler: {action_name!r} was started and not stopped yet")
        stack = self._ranges[action_name] = contextlib.ExitStack()
        stack.enter_context(torch.profiler.record_function(action_name))

    def stop(self, action_name: str) -> None:
        stack = self._ranges.pop(action_name, None)
        if stack is None:
            raise ValueError(f"profiler: {action_name!r} was stopped without being started")
        stack.close()
        if action_name == "run_training_batch" and self.profiler is not None:
            self.profiler.step()  # a `schedule` counts training batches

    def _keep_trace(self, profiler: torch.profiler.profile) -> None:
        """torch's `on_trace_ready`: at the end of each recorded cycle (a `schedule`'s active
        steps, or the whole run), before it forgets the cycle's events."""
        handle, name = tempfile.mkstemp(suffix=".json")
        os.close(handle)
        try:
            profiler.export_chrome_trace(name)
            self._traces.append(Path(name).read_text())
        finally:
            os.unlink(name)

    def _finish(self) -> None:
        if self.profiler is not None and not self._finished:
            for stack in self._ranges.values():
                stack.close()
            self._ranges = {}
            self.profiler.__exit__(None, None, None)
            self._finished = True

    def reset(self) -> None:
        self._finish()
        self.profiler = None
        self._finished = False
        self._traces = []

    def summary(self) -> str:
        self._finish()
        if self.profiler is None or self.profiler.profiler is None:
            return ""  # nothing ran, or a `schedule` never reached its active steps
        averages = self.profiler.key_averages(group_by_input_shape=self.group_by_input_shapes)
        return str(
            averages.table(sort_by=self.sort_by_key, row_limit=self.row_limit, **self.table_kwargs)
        )

    def save_files(self, folder: Path, name: str) -> None:
        """The trace as `{name}.pt.trace.json`; a schedule's cycles as `{name}-{i}.pt.trace.json`."""
        for index, trace in enumerate(self._traces):
            suffix = f"-{index}" if len(self._traces) > 1 else ""
            Path(folder, f"{name}{suffix}.pt.trace.json").write_text(trace)


_NAMES: dict[str, type[Profiler]] = {
    "simple": SimpleProfiler,
    "advanced": AdvancedProfiler,
    "pytorch": PyTorchProfiler,
}


def make_profiler(profiler: Any) -> Profiler:
    """The profiler `Trainer(profiler=...)` stands for: None, a name or a Profiler object."""
    if profiler is None:
        return PassThroughProfiler()
    if isinstance(profiler, Profiler):
        return profiler
    if isinstance(profiler, str) and profiler in _NAMES:
        return _NAMES[profiler]()
    raise MisconfigurationException(
        f"profiler={profiler!r}: supported are None, 'simple', 'advanced', 'pytorch' or a "
        "Profiler object (SimpleProfiler, AdvancedProfiler, PyTorchProfiler)"
    )
