"""`ltrain fit CONFIG --set KEY=A,B ... --multirun`: a grid of runs, one after another.

Each `--set` with comma-separated values contributes one axis; the runs are their cartesian
product, each in a version folder of its own with its own run.json. Only commas outside brackets,
braces and quotes separate values, so `--set model.sizes=[64,32],[128,64]` sweeps two lists and
`--set model.sizes=[64,32]` is one list, as without --multirun. Every member's config is checked
before the first one starts (a typo fails the sweep at once, nothing written); after that, a
member that fails is recorded and the sweep goes on. Ctrl-C stops the whole sweep.
"""

from __future__ import annotations

import itertools
import traceback
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from ltrain.app.config import load
from ltrain.app.errors import CommandError, ConfigError, fit_command, guard, resume_command
from ltrain.app.sources import Sources


def split_values(text: str) -> list[str]:
    """`KEY=A,B` -> [`KEY=A`, `KEY=B`]; commas inside [], {}, () or quotes belong to the value."""
    key, sep, raw = text.partition("=")
    if not sep:
        return [text]  # parse_override names the problem when the config is loaded
    values = value_texts(raw)
    if len(values) > 1 and any(not v.strip() for v in values):
        raise ConfigError(f"--set {text!r}: an empty value in a --multirun list; write KEY=A,B,C")
    return [f"{key}={value}" for value in values]


def is_value_list(text: str) -> bool:
    """Whether `--set KEY=A,B` would be swept under --multirun (for a hint when it is missing)."""
    key, sep, raw = text.partition("=")
    return bool(sep) and len(value_texts(raw)) > 1


def value_texts(raw: str) -> list[str]:
    """`A,B` -> [`A`, `B`], split at the commas outside brackets, braces and quotes."""
    values, current, depth, quote = [], "", 0, None
    for char in raw:
        if quote:
            quote = None if char == quote else quote
        elif char in "'\"" and not current.strip():
            quote = char  # a quote opens a YAML string only at the start of a value
        elif char in "[{(":
            depth += 1
        elif char in "]})":
            depth = max(depth - 1, 0)
        elif char == "," and depth == 0:
            values.append(current)
            current = ""
            continue
        current += char
    values.append(current)
    return values


def expand(overrides: Sequence[str]) -> tuple[list[list[str]], list[str]]:
    """The grid's members (each a list of single-valued overrides) and the keys that vary."""
    axes = [split_values(text) for text in overrides]
    swept = [
        text.partition("=")[0].strip()
        for text, axis in zip(overrides, axes, strict=True)
        if len(axis) > 1
    ]
    return [list(member) for member in itertools.product(*axes)], list(dict.fromkeys(swept))


def check_members(sources: Sources, members: Sequence[Sequence[str]]) -> None:
    """Validate every member's config; one ConfigError lists each problem once, with its runs."""
    found: dict[str, list[int]] = {}
    for number, member in enumerate(members, start=1):
        try:
            config, _ = load(sources.with_overrides(member))
            refuse_several_processes(config.config["trainer"], "--multirun")
        except ConfigError as error:
            for line in str(error).splitlines():
                found.setdefault(line, []).append(number)
    if found:
        lines = [
            line if len(numbers) == len(members) else f"{line} [sweep run {_numbers(numbers)}]"
            for line, numbers in found.items()
        ]
        raise ConfigError(lines)


def refuse_several_processes(trainer: Mapping[str, Any], command: str) -> None:
    """A sweep's or search's members run one after another in one process each: a data-parallel
    member is refused (its workers would run the whole sweep again)."""
    from ltrain.app.experiment import strategy_for
    from ltrain.errors import MisconfigurationException

    try:
        several = strategy_for(trainer).distributed
    except MisconfigurationException as error:
        raise ConfigError(str(error)) from None
    if several:
        raise ConfigError(
            f"trainer: {command} runs its members in one process each; set trainer.devices=1 "
            "(and strategy auto), or start each data-parallel run with its own `ltrain fit`"
        )


def _numbers(numbers: list[int]) -> str:
    return ", ".join(str(n) for n in numbers)


def run_sweep(sources: Sources) -> int:
    """Run the grid of `sources.overrides`; print its table sorted by the monitored metric.
    Returns the exit code. The files and LightningCLI's flags are every member's."""
    from ltrain.console import info
    from ltrain.errors import RunInterrupted
    from ltrain.run_record import RunRecord, command_line

    members, swept = expand(sources.overrides)
    check_members(sources, members)
    sweep_line = command_line()
    folders: list[Path] = []
    not_started: list[str] = []
    failed = 0
    for number, member in enumerate(members, start=1):
        member_sources = sources.with_overrides(member)
        line = fit_command(member_sources)
        info(f"Sweep run {number}/{len(members)}: {line}")
        sweep = {"command_line": sweep_line, "member": number, "members": len(members)}
        record = RunRecord("fit", line, extra={"sweep": sweep})
        try:
            outcome = run_member(member_sources, record)
        except KeyboardInterrupt as stop:
            if record.folder is not None:
                folders.append(record.folder)
            _show(folders, swept, failed, not_started)
            if not isinstance(stop, RunInterrupted):
                raise
            click.echo(f"Resume with: {resume_command(member_sources, stop)}", err=True)
            return 128 + stop.signum
        if outcome.error is not None:
            failed += 1
            if outcome.folder is None:
                not_started.append(f"{line}: {outcome.error}")
        if outcome.folder is not None:
            folders.append(outcome.folder)
    _show(folders, swept, failed, not_started)
    return 1 if failed else 0


@dataclass(frozen=True)
class Outcome:
    """How one member's fit ended: its version folder (None if it never got one) and the first
    line of its error (None when it finished)."""

    folder: Path | None
    error: str | None = None


def run_member(sources: Sources, record: Any, callbacks: Sequence[Any] = ()) -> Outcome:
    """One fit of a sweep or a search: an error is shown and returned, so the next member runs;
    Ctrl-C and signals propagate, to stop the whole sweep. `callbacks` join the config's."""
    from ltrain.app.experiment import run_command

    try:
        guard(run_command, "fit", sources, record=record, callbacks=callbacks)
    except CommandError as error:
        error.show()
        return Outcome(record.folder, error.message.splitlines()[0])
    except click.exceptions.Exit:  # data-parallel workers failed; they said why
        return Outcome(record.folder, "its data-parallel workers failed")
    except Exception as error:
        click.echo(traceback.format_exc(), err=True, nl=False)  # the user's code: their bug
        return Outcome(record.folder, f"{type(error).__name__}: {error}")
    return Outcome(record.folder)


def _show(folders: list[Path], swept: list[str], failed: int, not_started: list[str]) -> None:
    """The sweep's runs, best first by the monitored metric, then the members that never started."""
    from ltrain.app.runs_table import render, runs_frame, sort_frame

    if folders:
        frame = runs_frame(folders, keys=swept)
        if frame["monitor"].notna().any():
            frame = sort_frame(frame, "best")
            order = "best first"
        else:
            order = "in run order (the config monitors no metric)"
        failures = f", {failed} failed" if failed else ""
        click.echo(f"\nSweep: {len(folders)} runs{failures}, {order}")
        click.echo(render(frame, keys=swept))
    for line in not_started:
        click.echo(f"Not started: {line}")
