"""Commands that use a trained model: predict, serve (options from ServeSettings), evaluate,
export, report; demo; and app (the local web app)."""
from __future__ import annotations

import click

from graft.cli.options import as_json, config_from, config_options, data_options, echo_summary, on_ray, quiet
from graft.recipes.settings import ExportConfig, FrozenFitConfig
from graft.serve.settings import ServeSettings


@click.command()
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False))
@click.argument("inputs", nargs=-1, required=True, type=click.Path())
@click.option("--top-k", "-k", type=click.IntRange(1), default=3, show_default=True, help="Classes per image.")
@as_json
@click.option("--csv", "as_csv", is_flag=True, help="CSV: path,rank,class,probability,novelty,unfamiliar.")
@click.option("--tta", type=click.Choice(["none", "flip"]), default="none", show_default=True,
              help="Test-time augmentation: flip averages each image's and its mirror's probabilities.")
@data_options
@on_ray
def predict(run_dir, inputs, top_k, as_json, as_csv, tta, **reading):  # reading: --strict ... --ray
    """Top-k classes, novelty and unfamiliar for images (files or folders) on model.onnx in ONNX Runtime
    (--engine torch: torch). Exit 0; 1 if a file was skipped (each named on stderr); 2 if none was read."""
    if as_json and as_csv:
        raise click.UsageError("--json and --csv are two output formats: choose one")
    from graft.data.folders import image_files
    from graft.serve.predict import PredictOptions, predict_files

    r = reading
    options = PredictOptions(None if tta == "none" else tta, r["strict"], r["engine"], r["batch_size"], r["cache"],
                             not r["quiet"], r["ray"])
    answer = predict_files(run_dir, image_files(inputs), options)
    fmt = "json" if as_json else "csv" if as_csv else "table"
    click.get_current_context().exit(answer.write(click.echo, top_k, fmt))  # 0, or 1 when a file was skipped


@click.command()
@click.argument("runs", nargs=-1, required=True, metavar="[NAME=]RUN...")
@config_options(ServeSettings, exclude=("max_images", "default_top_k", "decode_threads"))
def serve(runs, **params):
    """Serve models: POST /v1/models/NAME/predict, GET /v1/models, /health, /docs, a preview at /.
    NAME=RUN names a model (default: the run folder's name)."""
    from graft.serve.runner import serve as run_server

    run_server(runs, config_from(ServeSettings, params), echo=click.echo)


@click.command()
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False))
@click.argument("data", type=click.Path())
@data_options
def evaluate(run_dir, data, strict, engine, batch_size, cache, quiet):
    """Score a saved model on a labelled class-folder tree; reports land in RUN_DIR/eval/<DATA>/."""
    from graft.recipes.frozen import evaluate as run_evaluation

    directory, metrics = run_evaluation(run_dir, data, strict=strict, engine=engine, batch_size=batch_size,
                                        cache=cache, progress=not quiet)
    echo_summary(directory, metrics, f"evaluated on {data}")


@click.command()
@config_options(ExportConfig)
def export(**params):
    """Export a model (ONNX: logits, probabilities, pooled features; OpenVINO, Core ML; --int8) and check
    it against torch and ONNX Runtime; classes, preprocessing and the input recipe travel with it."""
    from graft.artifacts.export import export_model

    click.echo("\n".join(export_model(config_from(ExportConfig, params))))


@click.command()
@click.option("--data", type=click.Path(), help="A class-folder tree instead of the embedded digits.")
@click.option("--out", "-o", type=click.Path(file_okay=False), default="runs/demo", show_default=True,
              help="Run folder to write.")
@config_options(FrozenFitConfig, only=("backbone", "image_size"))
@quiet
def demo(data, out, backbone, image_size, quiet):
    """The whole path on real data: features, logistic regression, report, pictures."""
    from graft.recipes.demo import demo as run_demo

    data, result = run_demo(out, data, backbone=backbone, image_size=image_size, progress=not quiet)
    echo_summary(result.run_dir, result.metrics)
    click.echo(f"confusion matrix picture: {result.run_dir / 'confusion_matrix.png'}\n"
               f"try: graft predict {result.run_dir} {data / sorted(p.name for p in data.iterdir())[0]}")


@click.command()
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--eval", "eval_name", default=None, help="The report of RUN_DIR/eval/NAME instead of the run's own.")
def report(run_dir, eval_name):
    """(Re)write RUN_DIR/report.html: one self-contained page to open in a browser."""
    from graft.reporting.html import write_html_report

    click.echo(f"wrote {write_html_report(run_dir, f'eval/{eval_name}' if eval_name else None)}")


@click.command()
@click.option("--root", type=click.Path(exists=True, file_okay=False), default=".", show_default=True,
              help="Projects (folders of class folders) are opened from under this folder only.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True, help="Port to listen on.")
def app(root, host, port):
    """A local web app: open a folder of photos, train, see the results, try it, export (prints a URL with a token)."""
    from graft.app.runner import run_app

    run_app(root, host, port, echo=click.echo)


COMMANDS = (predict, serve, evaluate, export, demo, report, app)
