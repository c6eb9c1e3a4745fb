"""Lightning's names that ltrain lacks say so by name, and the README's coverage table is current."""

from __future__ import annotations

import pytest

lightning = pytest.importorskip("lightning.pytorch", reason="compares with lightning (dev extra)")


@pytest.mark.parametrize("area", ["callbacks", "loggers"])
def test_not_yet_lists_exactly_lightnings_names_that_ltrain_lacks(area):
    import importlib

    ours = importlib.import_module(f"ltrain.{area}")
    theirs = set(getattr(lightning, area).__all__)
    assert set(ours.NOT_YET) == theirs - set(ours.__all__)
    for name in ours.NOT_YET:
        with pytest.raises(ImportError, match=rf"ltrain\.{area}\.{name}: Lightning has {name}"):
            exec(f"from ltrain.{area} import {name}")


def test_readme_coverage_table_is_what_the_code_has():
    import api_coverage

    assert api_coverage.readme_table() == api_coverage.table(), (
        "README's 'Lightning API coverage' is stale: run python tests/api_coverage.py --write"
    )
