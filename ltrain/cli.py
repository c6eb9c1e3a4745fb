"""The `ltrain` command line (click). Commands import torch inside their bodies, so start-up is fast."""

from __future__ import annotations

import click

from ltrain import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="ltrain")
def main() -> None:
    """ltrain: train PyTorch models with Lightning's API from YAML configs."""
