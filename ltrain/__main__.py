"""`python -m ltrain` runs the `ltrain` command."""

from ltrain.app.cli import main

main()
