"""CombinedLoader's four modes, as Lightning 2.6's iterates them (outputs taken from real Lightning)."""

from __future__ import annotations

import pytest

from ltrain.errors import MisconfigurationException
from ltrain.utilities import CombinedLoader

A, B = range(3), range(5)


@pytest.mark.parametrize(
    ("mode", "length", "batches"),
    [
        ("max_size_cycle", 5, [{"a": 0, "b": 0}, {"a": 1, "b": 1}, {"a": 2, "b": 2}, {"a": 0, "b": 3}, {"a": 1, "b": 4}]),
        ("min_size", 3, [{"a": 0, "b": 0}, {"a": 1, "b": 1}, {"a": 2, "b": 2}]),
        ("max_size", 5, [{"a": 0, "b": 0}, {"a": 1, "b": 1}, {"a": 2, "b": 2}, {"a": None, "b": 3}, {"a": None, "b": 4}]),
    ],
)  # fmt: skip
def test_modes_walk_the_loaders_together(mode, length, batches):
    combined = CombinedLoader({"a": A, "b": B}, mode)
    assert list(combined) == [(batch, index, 0) for index, batch in enumerate(batches)]
    assert len(combined) == length


def test_sequential_gives_each_loaders_batches_with_its_index():
    combined = CombinedLoader([A, B, [10, 11]], "sequential")
    assert list(combined) == [
        (0, 0, 0), (1, 1, 0), (2, 2, 0),
        (0, 0, 1), (1, 1, 1), (2, 2, 1), (3, 3, 1), (4, 4, 1),
        (10, 0, 2), (11, 1, 2),
    ]  # fmt: skip
    assert len(combined) == 10
    combined.limits = 2
    assert [(i, d) for _, i, d in combined] == [(0, 0), (1, 0), (0, 1), (1, 1), (0, 2), (1, 2)]


def test_nested_structures_come_back_in_their_shape_and_lists_of_values_are_loaders():
    combined = CombinedLoader((A, {"x": B, "y": [10, 11]}), "max_size")
    assert combined.flattened == [A, B, [10, 11]]
    assert [batch for batch, _, _ in combined][2:] == [
        (2, {"x": 2, "y": None}),
        (None, {"x": 3, "y": None}),
        (None, {"x": 4, "y": None}),
    ]


def test_an_unknown_mode_is_refused_naming_the_modes():
    with pytest.raises(MisconfigurationException, match="mode='longest'.*'min_size'"):
        CombinedLoader([A], "longest")
