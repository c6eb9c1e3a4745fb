"""`--space KEY=SPEC`: what `ltrain search` may try for one config key.

The grammar is `--set`'s with a distribution for the value:

    model.lr=loguniform(1e-4,1e-1)     a float, log-uniform between the bounds
    model.weight_decay=uniform(0,0.1)  a float, uniform between the bounds
    trainer.max_epochs=int(5,20)       an int between the bounds, both included; int(5,20,5) steps
    data.batch_size=choice(32,64,128)  one of the values (YAML, as with --set)
    model.optimizer=adam,sgd           a plain list: the same as choice(...), and a grid axis

The same specs may sit in a config's `search: {space: {KEY: SPEC}}` block. Every space is checked
against the config's signatures before a trial starts, by loading the config with each bound or
choice set (`check_spaces`): an unknown key or a value the type hint refuses fails the search at
once, with the `--space` named.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ltrain.app.errors import ConfigError
from ltrain.app.overrides import parse_value
from ltrain.app.sweeps import value_texts

FUNCTIONS = ("loguniform", "uniform", "int", "choice")
_CALL = re.compile(r"^\s*([a-z_]+)\s*\((.*)\)\s*$", re.DOTALL)


@dataclass(frozen=True)
class Space:
    """One key's space: a range (`low`..`high`, `step` for ints, `log`) or a list of choices.

    A choice is kept as the text typed (`[64,32]`, `adam`), so a trial's `--set` is exactly what
    the user wrote; `values` are those texts read as YAML where Optuna can store them.
    """

    key: str
    kind: str  # "float", "int" or "choice"
    spec: str
    low: float = 0.0
    high: float = 0.0
    step: int | None = None
    log: bool = False
    choices: tuple[str, ...] = ()

    @property
    def values(self) -> tuple[Any, ...]:
        """The choices as Optuna stores them: YAML scalars when every one is, else the texts."""
        parsed = [parse_value(text) for text in self.choices]
        if all(v is None or isinstance(v, bool | int | float | str) for v in parsed):
            if len({repr(v) for v in parsed}) == len(parsed):
                return tuple(parsed)
        return self.choices

    def override(self, value: Any) -> str:
        """The `--set KEY=VALUE` text that puts a sampled `value` into the config."""
        if self.kind == "choice":
            return f"{self.key}={self.choices[self.values.index(value)]}"
        if self.kind == "int":
            return f"{self.key}={int(value)}"
        return f"{self.key}={float(value)!r}"

    def probes(self) -> list[str]:
        """Overrides that reach every kind of value the space can give, to check against the
        config's type hints before the search starts: the bounds, or every choice."""
        if self.kind == "choice":
            return [f"{self.key}={text}" for text in self.choices]
        return [self.override(self.low), self.override(self.high)]

    def suggest(self, trial: Any) -> Any:
        """This space's value for an Optuna trial (a re-queued trial gets its recorded one)."""
        if self.kind == "choice":
            return trial.suggest_categorical(self.key, self.values)
        if self.kind == "int":
            return trial.suggest_int(self.key, int(self.low), int(self.high), step=self.step or 1)
        return trial.suggest_float(self.key, self.low, self.high, log=self.log)


def parse_space(text: str, option: str = "--space") -> Space:
    """`KEY=SPEC` -> Space; a malformed one is a ConfigError naming it and the grammar."""
    key, sep, spec = text.partition("=")
    key = key.strip()
    if not sep or not key or any(not part for part in key.split(".")):
        raise ConfigError(
            f"{option} {text!r}: expected KEY=SPEC, e.g. model.lr=loguniform(1e-4,1e-1)"
        )
    return space_of(key, spec.strip(), f"{option} {key}={spec.strip()}")


def space_of(key: str, spec: str, where: str) -> Space:
    call = _CALL.match(spec)
    if call is None:
        texts = [text.strip() for text in value_texts(spec)]
        if len(texts) < 2:
            raise ConfigError(
                f"{where}: one value is no space; give a list (A,B,C) or one of "
                f"{', '.join(f + '(...)' for f in FUNCTIONS)}, or use --set for a fixed value"
            )
        return _choice(key, spec, texts, where)
    function, inside = call.group(1), call.group(2)
    if function not in FUNCTIONS:
        raise ConfigError(f"{where}: unknown function {function!r}; expected one of {FUNCTIONS}")
    texts = [t.strip() for t in _arguments(inside)]
    if function == "choice":
        return _choice(key, spec, texts, where)
    numbers = [_number(text, where) for text in texts]
    if function == "int":
        if len(numbers) not in (2, 3) or any(n != int(n) for n in numbers):
            raise ConfigError(
                f"{where}: expected int(LOW,HIGH) or int(LOW,HIGH,STEP) of whole numbers"
            )
        step = int(numbers[2]) if len(numbers) == 3 else None
        if step is not None and step < 1:
            raise ConfigError(f"{where}: the step must be 1 or more, got {step}")
        _check_order(numbers[0], numbers[1], where)
        return Space(key, "int", spec, numbers[0], numbers[1], step=step)
    if len(numbers) != 2:
        raise ConfigError(f"{where}: expected {function}(LOW,HIGH)")
    low, high = numbers
    _check_order(low, high, where)
    if function == "loguniform" and low <= 0:
        raise ConfigError(f"{where}: loguniform needs LOW > 0, got {texts[0]}")
    return Space(key, "float", spec, low, high, log=function == "loguniform")


def _arguments(inside: str) -> list[str]:
    return value_texts(inside) if inside.strip() else []


def _choice(key: str, spec: str, texts: list[str], where: str) -> Space:
    if not texts:
        raise ConfigError(
            f"{where}: an empty choice; write choice(A,B,...) with at least one value"
        )
    if any(not text for text in texts):
        raise ConfigError(f"{where}: an empty value in the choices; write A,B,C")
    if len(set(texts)) != len(texts):
        raise ConfigError(f"{where}: a value appears twice in the choices")
    return Space(key, "choice", spec, choices=tuple(texts))


def _number(text: str, where: str) -> float:
    try:
        number = float(text)
    except ValueError:
        raise ConfigError(f"{where}: {text!r} is not a number") from None
    if not math.isfinite(number):
        raise ConfigError(f"{where}: {text!r} is not a finite number")
    return number


def _check_order(low: float, high: float, where: str) -> None:
    if not low < high:
        raise ConfigError(f"{where}: LOW must be below HIGH, got {low:g} >= {high:g}")


def spaces_from(texts: Sequence[str], block: Any) -> list[Space]:
    """The `--space` options, over the config's `search.space` block key by key."""
    spaces: dict[str, Space] = {}
    if block is not None:
        if not isinstance(block, Mapping):
            raise ConfigError(
                f"search.space: expected a mapping of KEY: SPEC, got {type(block).__name__}"
            )
        for key, spec in block.items():
            if isinstance(spec, list):
                spec = ",".join(str(item) for item in spec)
            spaces[str(key)] = space_of(str(key), str(spec), f"search.space.{key}")
    for text in texts:
        space = parse_space(text)
        spaces[space.key] = space
    if not spaces:
        raise ConfigError(
            "search: no space to search; add --space KEY=SPEC, e.g. "
            "--space model.lr=loguniform(1e-4,1e-1), or a search.space block to the config"
        )
    return list(spaces.values())


def check_spaces(sources: Any, spaces: Sequence[Space]) -> None:
    """Load the config with each bound or choice of every space; each problem names its space."""
    from ltrain.app.config import load

    problems: list[str] = []
    for space in spaces:
        for probe in space.probes():  # the first value refused speaks for its space
            try:
                load(sources.with_overrides([*sources.overrides, probe]))
            except ConfigError as error:
                where = f"(--space {space.key}={space.spec})"
                problems += [line.replace(f"(--set {probe})", where) for line in error.problems]
                break
    if problems:
        raise ConfigError(problems)


def grid_points(spaces: Sequence[Space]) -> list[dict[str, Any]]:
    """Every combination of the spaces' choices, first space slowest (as --multirun's grid)."""
    import itertools

    ranges = [space.key for space in spaces if space.kind != "choice"]
    if ranges:
        raise ConfigError(
            f"--sampler grid: {', '.join(ranges)} is a range; a grid needs lists (A,B,C) or "
            "choice(...), or pick --sampler tpe|random|cmaes"
        )
    keys = [space.key for space in spaces]
    return [
        dict(zip(keys, point, strict=True))
        for point in itertools.product(*(space.values for space in spaces))
    ]
