"""Loading the served models and running the app on uvicorn until Ctrl-C."""
from __future__ import annotations

import errno
import socket
import subprocess
import sys

from graft._io.artifact import model_folder
from graft.errors import GraftError, ModelError
from graft.inference import Predictor

_EXPORT = "import sys; from graft.inference import current_export; current_export(sys.argv[1])"


def load_predictor(run_dir) -> Predictor:
    """The run's predictor; a missing or stale model.onnx is exported in a child process, so the
    serving process never imports torch (it would stay in memory for nothing)."""
    if model_folder(run_dir) is None:
        raise ModelError(f"{run_dir} is not a graft model: expected graft.json and weights.safetensors "
                         "(or a run folder holding model/)")
    try:
        return Predictor.load(run_dir, export=False)
    except ModelError:
        pass
    done = subprocess.run([sys.executable, "-c", _EXPORT, str(run_dir)], capture_output=True, text=True)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no message"])[-1]
        raise ModelError(f"{run_dir}: exporting model.onnx failed: {last}")
    return Predictor.load(run_dir, export=False)


def listening_socket(host: str, port: int) -> socket.socket:
    """A socket bound to ``host:port`` (uvicorn listens on it), or GraftError in one line when
    the port is taken: bound before anything is printed, so no URL of another process is shown."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn: a restart need not wait TIME_WAIT
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise GraftError(f"port {port} on {host} is in use by another process: stop it or choose "
                             "another --port") from None
        raise GraftError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    return sock


def serve(runs, settings=None, echo=print) -> None:
    """Serve ``runs`` (``NAME=RUN`` or ``RUN`` each, see :func:`graft.serve.models.named_runs`)
    on ``settings.host:settings.port`` until interrupted (SIGINT/SIGTERM: uvicorn finishes the
    requests in flight, then the batchers stop). Raises GraftError when the ``serve`` extra is
    not installed, for clashing names, or when the port is taken."""
    import importlib.util

    from graft.serve.models import ServedModel, named_runs
    from graft.serve.settings import ServeSettings

    settings = settings or ServeSettings()
    host, port = settings.host, settings.port
    missing = [package for module, package in (("fastapi", "fastapi"), ("uvicorn", "uvicorn"),
                                               ("python_multipart", "python-multipart"),
                                               ("fastapi_offline", "fastapi-offline"))
               if importlib.util.find_spec(module) is None]
    if missing:
        raise GraftError(f"graft serve needs {', '.join(missing)}: pip install 'graft-vision[serve]'")
    import uvicorn

    from graft.serve.app import create_app
    from graft.serve.connections import server_config

    named = named_runs(runs)
    sock = listening_socket(host, port)
    try:
        served = {name: ServedModel.load(name, run, load_predictor) for name, run in named.items()}
        for model in served.values():
            model.predictor.warm_up()
        app = create_app(served, settings)
        for name, run in named.items():
            echo(f"  {name} -> {run.resolve()}")
        echo(f"graft serve: http://{host}:{port}/  models: {', '.join(served)}  (Ctrl-C stops)")
        echo(f"  Host headers answered: {', '.join(settings.host_names())} (--allowed-hosts adds more)")
        server = uvicorn.Server(server_config(app, settings))
        try:
            server.run(sockets=[sock])
        except KeyboardInterrupt:
            pass
    finally:
        sock.close()
    echo("graft serve: stopped")
