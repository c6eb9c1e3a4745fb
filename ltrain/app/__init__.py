"""The `ltrain` command: configs, run folders, the runs table, plots and sweeps.

The app builds on the library (`import ltrain`) the way a user's script does, through its public
names; the library never imports the app. This package imports nothing itself, so `ltrain --help`
loads only the command line (cli.py) and what it needs.
"""
