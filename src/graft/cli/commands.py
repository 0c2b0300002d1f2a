"""The ``graft`` command line: parse arguments, call the library, print. No logic of its own."""
from __future__ import annotations

import csv
import importlib
import json
import sys
import warnings
from pathlib import Path

import click

from graft.cli.inspect import common_data_options
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
@common_data_options
def predict(run_dir, inputs, top_k, as_json, as_csv, tta, strict, engine, batch_size, no_cache, quiet):
    """Top-k classes with probabilities for images (files or folders)."""
    import numpy as np

    if as_json and as_csv:
        raise click.UsageError("--json and --csv are two output formats: choose one")

    from graft.artifacts.model import GraftModel

    model = GraftModel.load(run_dir)
    features, probabilities = model.predict_paths(_expand_inputs(inputs), strict=strict, engine=engine,
                                                  batch_size=batch_size, cache=not no_cache,
                                                  progress=not quiet, tta=tta)
    # a multi-task model: each task's top-k among its own classes (probabilities sum to 1 per task)
    parts = getattr(model.head, "slices", None) or {None: slice(0, len(model.classes))}
    writer = csv.writer(sys.stdout) if as_csv else None
    if writer:
        writer.writerow(["path", *(["task"] if len(parts) > 1 else []), "rank", "class", "probability"])
    for path, probs in zip(features.paths, probabilities):
        tops = {}
        for task, part in parts.items():
            names, scores = model.classes[part], probs[part]
            order = np.argsort(-scores)[:min(top_k, len(names))]
            tops[task] = [(names[j].split("/", 1)[1] if task else names[j], float(scores[j])) for j in order]
        if as_json:
            listed = {task: [{"class": c, "probability": round(p, 6)} for c, p in top] for task, top in tops.items()}
            click.echo(json.dumps({"path": path, "top": listed[None]} if None in listed
                                  else {"path": path, "tasks": listed}))
        elif writer:
            for task, top in tops.items():
                for rank, (c, p) in enumerate(top, 1):
                    writer.writerow([path, *([task] if task else []), rank, c, f"{p:.6f}"])
        else:
            click.echo(f"{path}\t" + "  |  ".join((f"{task}: " if task else "") + "  ".join(
                f"{c} {p:.3f}" for c, p in top) for task, top in tops.items()))
    for item in features.skipped:
        if as_json:
            click.echo(json.dumps({"path": item["path"], "error": item["reason"]}))


for _module in ("train", "inspect", "deploy"):
    for _command in importlib.import_module(f"graft.cli.{_module}").COMMANDS:
        main.add_command(_command)
