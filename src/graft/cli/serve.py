"""``graft serve RUN [RUN ...]``: the models over HTTP (API, batching, preview page)."""
from __future__ import annotations

import importlib.util

import click

from graft.errors import GraftError

_NEEDED = (("fastapi", "fastapi"), ("uvicorn", "uvicorn"), ("python_multipart", "python-multipart"))


@click.command()
@click.argument("runs", nargs=-1, required=True, type=click.Path(exists=True, file_okay=False))
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on; 0.0.0.0 exposes the models to the network.")
@click.option("--port", type=click.IntRange(1, 65535), default=8000, show_default=True)
@click.option("--max-batch", type=click.IntRange(1), default=32, show_default=True,
              help="Images per ONNX Runtime batch, gathered from concurrent requests.")
@click.option("--max-wait-ms", type=click.FloatRange(0), default=5.0, show_default=True,
              help="How long the first waiting request waits for others to join its batch.")
@click.option("--max-body-mb", type=click.FloatRange(0.001), default=20.0, show_default=True,
              help="Largest request body accepted (413 beyond it).")
def serve(runs, host, port, max_batch, max_wait_ms, max_body_mb):
    """Serve trained models: POST /v1/models/NAME/predict, GET /v1/models, /health, /docs, and a
    preview page at / (NAME: the run folder's name)."""
    missing = [package for module, package in _NEEDED if importlib.util.find_spec(module) is None]
    if missing:
        raise GraftError(f"graft serve needs {', '.join(missing)}: pip install 'graft[serve]'")
    from graft.serve.app import ServeSettings
    from graft.serve.runner import serve as run_server

    settings = ServeSettings(max_batch=max_batch, max_wait_ms=max_wait_ms, max_body_bytes=int(max_body_mb * 2**20))
    try:
        run_server(runs, host, port, settings, echo=click.echo)
    except KeyboardInterrupt:
        pass
    click.echo("graft serve: stopped")
