"""`python -m ltrain` runs the `ltrain` command."""

from ltrain.cli import main

main()
