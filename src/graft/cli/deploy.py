"""Commands that use a trained model: evaluate, export, report, demo (predict and serve live
in their own modules)."""
from __future__ import annotations

from pathlib import Path

import click

from graft.cli.options import data_options
from graft.cli.output import print_summary
from graft.defaults import DEFAULT_BACKBONE


@click.command()
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False))
@click.argument("data", type=click.Path())
@data_options
def evaluate(run_dir, data, strict, engine, batch_size, cache, quiet):
    """Score a saved model on a labelled class-folder tree; reports land in RUN_DIR/eval/<DATA>/."""
    from graft.recipes.frozen import evaluate as run_evaluation

    directory, metrics = run_evaluation(run_dir, data, strict=strict, engine=engine, batch_size=batch_size,
                                        cache=cache, progress=not quiet)
    print_summary(directory, metrics, scored_on=f"evaluated on {data}")


@click.command()
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--format", "fmt", type=click.Choice(["onnx"]), default="onnx", show_default=True)
@click.option("--out", "-o", type=click.Path(dir_okay=False), default=None,
              help="Output file (default RUN_DIR/model.onnx); never inside RUN_DIR/model/, and an existing "
                   "file is replaced only if it is an earlier graft export.")
@click.option("--input", "input_type", type=click.Choice(["float", "uint8"]), default="float", show_default=True,
              help="float: normalised float32 (N,3,S,S); uint8: cropped RGB pixels (N,S,S,3), normalised inside.")
def export(run_dir, fmt, out, input_type):
    """Export a model to ONNX (outputs: logits, probabilities) and check it against torch.

    Class names, preprocessing and the full input recipe travel in the ONNX metadata.
    """
    from graft.artifacts.export import export_and_verify

    path, max_diff = export_and_verify(run_dir, out, input_type=input_type)
    click.echo(f"wrote {path} (ONNX Runtime vs torch: max |diff| {max_diff:.2e})")


@click.command()
@click.option("--data", type=click.Path(), default=None,
              help="Run on this class-folder tree instead of the embedded digits.")
@click.option("--out", "-o", type=click.Path(file_okay=False), default="runs/demo", show_default=True)
@click.option("--backbone", "-b", default=DEFAULT_BACKBONE, show_default=True)
@click.option("--image-size", type=click.IntRange(32), default=None)
@click.option("--quiet", "-q", is_flag=True)
def demo(data, out, backbone, image_size, quiet):
    """The whole path on real data: features, logistic regression, report, pictures."""
    from graft.recipes.demo import demo as run_demo

    if data is None:
        click.echo("demo data: scikit-learn's 1797 handwritten digits, written to graft's cache")
    data, result = run_demo(out, data, backbone=backbone, image_size=image_size, progress=not quiet)
    print_summary(result.run_dir, result.metrics)
    click.echo(f"confusion matrix picture: {result.run_dir / 'confusion_matrix.png'}\n"
               f"try: graft predict {result.run_dir} {data / sorted(p.name for p in data.iterdir())[0]}")


@click.command()
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--eval", "eval_name", default=None, help="The report of RUN_DIR/eval/NAME instead of the run's own.")
def report(run_dir, eval_name):
    """(Re)write RUN_DIR/report.html: one self-contained page to open in a browser."""
    from graft.errors import GraftError
    from graft.reporting.html import write_html_report

    subdir = f"eval/{eval_name}" if eval_name else None
    target = Path(run_dir) / (subdir or "")
    if not (target / "metrics.json").is_file():
        raise GraftError(f"{target} holds no metrics.json: not a finished graft run or evaluation")
    click.echo(f"wrote {write_html_report(run_dir, subdir)}")


COMMANDS = (evaluate, export, demo, report)
