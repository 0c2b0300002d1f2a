"""The ``graft`` command line."""
from graft.cli.commands import main

__all__ = ["main"]
