"""The ``graft`` command line: parse arguments, call the library, print. No logic of its own."""
from __future__ import annotations

import importlib
import warnings

import click

from graft.cli.options import data_options
from graft.errors import GraftError


def _show_warning(message, category, filename, lineno, file=None, line=None):
    click.echo(f"warning: {message}", err=True)


class GraftGroup(click.Group):
    """Turns GraftError (bad input, bad options) into one clear line and exit code 2."""

    def invoke(self, ctx):
        warnings.showwarning = _show_warning
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=FutureWarning)
        try:
            return super().invoke(ctx)
        except GraftError as exc:
            click.echo(f"error: {exc}", err=True)
            ctx.exit(2)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            ctx.exit(130)


@click.group(cls=GraftGroup)
@click.version_option(package_name="graft")
def main():
    """graft: transfer learning for image classifiers, fast and offline on a CPU."""


@main.command()
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False))
@click.argument("inputs", nargs=-1, required=True, type=click.Path())
@click.option("--top-k", "-k", type=click.IntRange(1), default=3, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per image.")
@click.option("--csv", "as_csv", is_flag=True, help="CSV: path,rank,class,probability.")
@click.option("--tta", type=click.Choice(["none", "flip"]), default="none", show_default=True,
              help="Test-time augmentation: flip averages each image's and its mirror's probabilities.")
@data_options
def predict(run_dir, inputs, top_k, as_json, as_csv, tta, strict, engine, batch_size, cache, quiet):
    """Top-k classes with probabilities for images (files or folders).

    Runs the run's model.onnx on ONNX Runtime without torch (exporting it once when it is missing
    or older than the model). --engine torch, or a model ONNX Runtime cannot run, takes the
    torch path. --json rows carry novelty (how unlike the training images) and unfamiliar.
    """
    if as_json and as_csv:
        raise click.UsageError("--json and --csv are two output formats: choose one")
    from graft.data.folders import image_files
    from graft.serve.predict import PredictOptions, predict_files

    options = PredictOptions(None if tta == "none" else tta, strict, engine, batch_size, cache, not quiet)
    answer = predict_files(run_dir, image_files(inputs), options)
    for line in answer.lines(top_k, "json" if as_json else "csv" if as_csv else "table"):
        click.echo(line)


for _module in ("train", "inspect", "deploy"):
    for _command in importlib.import_module(f"graft.cli.{_module}").COMMANDS:
        main.add_command(_command)
main.add_command(importlib.import_module("graft.cli.serve").serve)
