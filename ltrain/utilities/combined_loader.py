"""`CombinedLoader`: several iterables (loaders) walked together, in one of Lightning's four modes.

The iterables may sit in any nesting of dicts, lists and tuples; each batch comes back in that
structure. Iterating yields `(batch, batch_idx, dataloader_idx)`, as Lightning's does:

    min_size        stop with the shortest iterable
    max_size_cycle  go on until the longest is exhausted, restarting the shorter ones
    max_size        go on until the longest is exhausted, None for the ones already done
    sequential      one iterable after the other; `batch` is that iterable's own batch
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from ltrain.errors import MisconfigurationException

MODES = ("min_size", "max_size_cycle", "max_size", "sequential")


class CombinedLoader:
    def __init__(self, iterables: Any, mode: str = "min_size") -> None:
        if mode not in MODES:
            raise MisconfigurationException(
                f"CombinedLoader(mode={mode!r}): expected one of {', '.join(map(repr, MODES))}"
            )
        self._iterables = iterables
        self._mode = mode
        self._flattened = _flatten(iterables)
        self._limits: list[int | float] | None = None

    @property
    def iterables(self) -> Any:
        return self._iterables

    @property
    def mode(self) -> str:
        return self._mode

    @property
    def flattened(self) -> list[Any]:
        """The iterables in the order a depth-first walk of the structure meets them."""
        return list(self._flattened)

    @flattened.setter
    def flattened(self, iterables: list[Any]) -> None:
        if len(iterables) != len(self._flattened):
            raise ValueError(
                f"Mismatch in flattened length ({len(iterables)}) and existing length "
                f"({len(self._flattened)})"
            )
        self._iterables = _rebuild(self._iterables, iter(iterables))
        self._flattened = list(iterables)

    @property
    def limits(self) -> list[int | float] | None:
        return self._limits

    @limits.setter
    def limits(self, limits: int | float | list[int | float] | None) -> None:
        if isinstance(limits, (int, float)):
            limits = [limits] * len(self._flattened)
        elif limits is not None and len(limits) != len(self._flattened):
            raise ValueError(
                f"Mismatch in number of limits ({len(limits)}) and number of iterables "
                f"({len(self._flattened)})"
            )
        self._limits = limits

    @property
    def sampler(self) -> Any:
        return _rebuild(self._iterables, (getattr(i, "sampler", None) for i in self._flattened))

    @property
    def batch_sampler(self) -> Any:
        return _rebuild(
            self._iterables, (getattr(i, "batch_sampler", None) for i in self._flattened)
        )

    def _lengths(self) -> list[int | float]:
        lengths: list[int | float] = []
        for index, iterable in enumerate(self._flattened):
            try:
                length: int | float = len(iterable)
            except TypeError:
                length = float("inf")
            if self._limits is not None:
                length = min(length, self._limits[index])
            lengths.append(length)
        return lengths

    def __len__(self) -> int:
        lengths = self._lengths()
        if not lengths:
            return 0
        total = sum(lengths) if self._mode == "sequential" else _steps(self._mode, lengths)
        if total == float("inf"):
            raise TypeError(f"CombinedLoader({self._mode!r}) of an iterable without a length")
        return int(total)

    def __iter__(self) -> Iterator[tuple[Any, int, int]]:
        if self._mode == "sequential":
            return self._sequential()
        return self._together()

    def reset(self) -> None:
        """Nothing is held between iterations: each `iter()` starts every iterable afresh."""

    def _sequential(self) -> Iterator[tuple[Any, int, int]]:
        for dataloader_idx, (iterable, limit) in enumerate(
            zip(self._flattened, self._lengths(), strict=True)
        ):
            for batch_idx, batch in enumerate(iterable):
                if batch_idx >= limit:
                    break
                yield batch, batch_idx, dataloader_idx

    def _together(self) -> Iterator[tuple[Any, int, int]]:
        lengths = self._lengths()
        if not lengths:
            return
        iterators = [iter(i) for i in self._flattened]
        done = [False] * len(iterators)
        steps = _steps(self._mode, lengths)
        batch_idx = 0
        while batch_idx < steps:
            batches: list[Any] = []
            for index, iterator in enumerate(iterators):
                if batch_idx >= lengths[index] and self._mode == "max_size":
                    done[index] = True
                if done[index]:
                    batches.append(None)
                    continue
                try:
                    batches.append(next(iterator))
                except StopIteration:
                    if self._mode == "min_size":
                        return
                    if self._mode == "max_size":
                        done[index] = True
                        batches.append(None)
                        continue
                    iterators[index] = iter(self._flattened[index])  # cycle the shorter one
                    batches.append(next(iterators[index]))
            if self._mode == "max_size" and all(done):
                return
            yield _rebuild(self._iterables, iter(batches)), batch_idx, 0
            batch_idx += 1


def _steps(mode: str, lengths: list[int | float]) -> int | float:
    """How many combined batches the modes that walk the loaders together yield."""
    return min(lengths) if mode == "min_size" else max(lengths)


def _flatten(structure: Any) -> list[Any]:
    if not _is_structure(structure):
        return [structure]
    return [leaf for value in _values(structure) for leaf in _flatten(value)]


def _rebuild(structure: Any, leaves: Iterator[Any]) -> Any:
    """`structure` with each leaf replaced by the next of `leaves`."""
    if not _is_structure(structure):
        return next(leaves)
    if isinstance(structure, Mapping):
        return {key: _rebuild(value, leaves) for key, value in structure.items()}
    return type(structure)(_rebuild(value, leaves) for value in structure)


def _is_structure(value: Any) -> bool:
    """A dict, list or tuple of iterables holds loaders; one of plain values is itself an
    iterable (`[10, 11]` is a loader of two batches), as Lightning tells them apart."""
    if not isinstance(value, (Mapping, list, tuple)):
        return False
    return all(hasattr(item, "__iter__") for item in _values(value))


def _values(structure: Any) -> list[Any]:
    return list(structure.values()) if isinstance(structure, Mapping) else list(structure)
