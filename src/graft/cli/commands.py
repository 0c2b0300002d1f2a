"""The ``graft`` command line: parse arguments, call the library, print. No logic of its own."""
from __future__ import annotations

import csv
import importlib
import json
import sys
import warnings
from pathlib import Path

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


def _expand_inputs(inputs) -> list[Path]:
    from graft.data.folders import is_hidden

    paths: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            paths.extend(sorted(p for p in path.rglob("*") if p.is_file()
                                and not any(is_hidden(part) for part in p.relative_to(path).parts)))
        else:
            paths.append(path)  # a missing file is reported by the extractor, not dropped here
    if not paths:
        raise GraftError("no image files found in " + ", ".join(map(str, inputs)))
    return paths


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
    from graft.serve.predict import PredictOptions, predict_files

    options = PredictOptions(None if tta == "none" else tta, strict, engine, batch_size, cache, not quiet)
    _print_predictions(predict_files(run_dir, _expand_inputs(inputs), options), top_k, as_json, as_csv)


def _print_predictions(answer, top_k, as_json, as_csv):
    from graft.serve.onnx_predictor import top_per_task

    classes, tasks, batch = answer.classes, answer.tasks, answer.batch
    writer = csv.writer(sys.stdout) if as_csv else None
    if writer:
        writer.writerow(["path", *(["task"] if len(tasks) > 1 else []), "rank", "class", "probability"])
    for i, (path, probs) in enumerate(zip(batch.paths, batch.probabilities)):
        tops = top_per_task(classes, tasks, probs, top_k)
        novelty = None if batch.novelty is None else round(float(batch.novelty[i]), 4)
        unfamiliar = None if batch.unfamiliar is None else bool(batch.unfamiliar[i])
        if as_json:
            listed = {task: [{"class": c, "probability": round(p, 6)} for c, p in top] for task, top in tops.items()}
            row = {"path": path, "top": listed[None]} if None in listed else {"path": path, "tasks": listed}
            click.echo(json.dumps({**row, "novelty": novelty, "unfamiliar": unfamiliar}))
        elif writer:
            for task, top in tops.items():
                for rank, (c, p) in enumerate(top, 1):
                    writer.writerow([path, *([task] if task else []), rank, c, f"{p:.6f}"])
        else:
            flag = f"\tunfamiliar (novelty {novelty:.1f})" if unfamiliar else ""
            click.echo(f"{path}\t" + "  |  ".join((f"{task}: " if task else "") + "  ".join(
                f"{c} {p:.3f}" for c, p in top) for task, top in tops.items()) + flag)
    for item in batch.skipped:
        if as_json:
            click.echo(json.dumps({"path": item["path"], "error": item["reason"]}))


for _module in ("train", "inspect", "deploy"):
    for _command in importlib.import_module(f"graft.cli.{_module}").COMMANDS:
        main.add_command(_command)
main.add_command(importlib.import_module("graft.cli.serve").serve)
