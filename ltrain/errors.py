"""Errors ltrain raises for inputs it refuses. One class, so the CLI turns every one into a single line.

The name is Lightning's, so code that catches `MisconfigurationException` keeps working.
"""

from __future__ import annotations


class MisconfigurationException(Exception):
    """A setting, hook or return value ltrain cannot run with; the message says what would be valid."""
