"""Differences between two scenarios' observations, as readable lines (empty: the same)."""

from __future__ import annotations

import difflib
from typing import Any

import torch


def differences(expected: Any, actual: Any, where: str = "") -> list[str]:
    """Every place `actual` (ltrain) differs from `expected` (Lightning): floats bit for bit."""
    if isinstance(expected, dict) and isinstance(actual, dict):
        found = []
        for key in sorted(set(expected) | set(actual), key=str):
            path = f"{where}.{key}" if where else str(key)
            if key not in actual:
                found.append(f"{path}: missing (Lightning: {_short(expected[key])})")
            elif key not in expected:
                found.append(f"{path}: not in Lightning's (ltrain: {_short(actual[key])})")
            else:
                found += differences(expected[key], actual[key], path)
        return found
    if isinstance(expected, list) and isinstance(actual, list):
        if all(isinstance(v, str) for v in expected + actual):
            return _sequence_difference(expected, actual, where) if expected != actual else []
        if len(expected) != len(actual):
            return [
                f"{where}: {len(actual)} items, Lightning {len(expected)}: "
                f"ltrain {_short(actual)} vs Lightning {_short(expected)}"
            ]
        found = []
        for index, (e, a) in enumerate(zip(expected, actual, strict=True)):
            found += differences(e, a, f"{where}[{index}]")
        return found
    if isinstance(expected, torch.Tensor) and isinstance(actual, torch.Tensor):
        if expected.shape == actual.shape and expected.dtype == actual.dtype:
            if torch.equal(expected, actual):
                return []
            gap = (expected.double() - actual.double()).abs().max().item()
            return [f"{where}: tensors differ by up to {gap:.3g}"]
        return [
            f"{where}: tensor {tuple(actual.shape)} {actual.dtype}, Lightning "
            f"{tuple(expected.shape)} {expected.dtype}"
        ]
    if type(expected) is not type(actual) and not (
        isinstance(expected, (int, float)) and isinstance(actual, (int, float))
    ):
        return [f"{where}: ltrain {_short(actual)}, Lightning {_short(expected)}"]
    if expected != actual:
        return [f"{where}: ltrain {_short(actual)}, Lightning {_short(expected)}"]
    return []


def _sequence_difference(expected: list[str], actual: list[str], where: str) -> list[str]:
    """Where two sequences of names part, as diff lines ('-' Lightning only, '+' ltrain only)."""
    changed = [line for line in difflib.ndiff(expected, actual) if line.startswith(("-", "+"))]
    return [f"{where}: sequences differ (- Lightning, + ltrain): " + " ".join(changed[:24])]


def _short(value: Any, limit: int = 160) -> str:
    text = repr(value) if not isinstance(value, torch.Tensor) else f"tensor{tuple(value.shape)}"
    return text if len(text) <= limit else text[: limit - 3] + "..."
