"""The ``graft`` command (:mod:`.train`, :mod:`.inspect`, :mod:`.deploy`): parse arguments, call
the library, print; options generated from the recipes' Configs (:mod:`.options`)."""
from __future__ import annotations

import importlib
import warnings

import click

from graft import __version__
from graft.errors import GraftError


class GraftGroup(click.Group):
    """Warnings as one line each; GraftError (bad input, bad options) as one clear line and exit code 2."""

    def invoke(self, ctx):
        warnings.showwarning = lambda message, *args, **kwargs: click.echo(f"warning: {message}", err=True)
        for category in (DeprecationWarning, FutureWarning):
            warnings.filterwarnings("ignore", category=category)
        try:
            return super().invoke(ctx)
        except GraftError as exc:
            click.echo(f"error: {exc}", err=True)
            ctx.exit(2)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            ctx.exit(130)


@click.group(cls=GraftGroup)
@click.version_option(version=__version__)
def main():
    """graft: transfer learning for image classifiers, fast and offline on a CPU."""


for _module in ("train", "inspect", "deploy"):
    for _command in importlib.import_module(f"graft.cli.{_module}").COMMANDS:
        main.add_command(_command)
__all__ = ["main"]
