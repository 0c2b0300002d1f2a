"""``graft serve RUN [RUN ...]``: the models over HTTP (API, batching, preview page); its
options are generated from :class:`graft.serve.settings.ServeSettings`."""
from __future__ import annotations

import click

from graft.cli.options import config_from, config_options
from graft.serve.settings import ServeSettings


@click.command()
@click.argument("runs", nargs=-1, required=True, type=click.Path(exists=True, file_okay=False))
@config_options(ServeSettings, exclude=("max_images", "default_top_k", "decode_threads"))
def serve(runs, **params):
    """Serve trained models: POST /v1/models/NAME/predict, GET /v1/models, /health, /docs, and a
    preview page at / (NAME: the run folder's name)."""
    from graft.serve.runner import serve as run_server

    try:
        run_server(runs, config_from(ServeSettings, params), echo=click.echo)
    except KeyboardInterrupt:
        pass
    click.echo("graft serve: stopped")
