"""Loading the served models and running the app on uvicorn until Ctrl-C."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from graft._io.artifact import model_folder
from graft.errors import ModelError
from graft.serve.onnx_predictor import OnnxPredictor

_EXPORT = "import sys; from graft.serve.onnx_predictor import current_export; current_export(sys.argv[1])"


def load_predictor(run_dir) -> OnnxPredictor:
    """The run's predictor; a missing or stale model.onnx is exported in a child process, so the
    serving process never imports torch (it would stay in memory for nothing)."""
    if model_folder(run_dir) is None:
        raise ModelError(f"{run_dir} is not a graft model: expected graft.json and weights.safetensors "
                         "(or a run folder holding model/)")
    try:
        return OnnxPredictor.load(run_dir, export=False)
    except ModelError:
        pass
    done = subprocess.run([sys.executable, "-c", _EXPORT, str(run_dir)], capture_output=True, text=True)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no message"])[-1]
        raise ModelError(f"{run_dir}: exporting model.onnx failed: {last}")
    return OnnxPredictor.load(run_dir, export=False)


def model_names(runs) -> list[str]:
    """A URL name per run: its folder's name (the parent's for a bare folder called 'model'),
    with -2, -3, ... for repeats."""
    names: list[str] = []
    for run in runs:
        path = Path(run).resolve()
        base = path.parent.name if path.name == "model" else path.name
        name, n = base, 1
        while name in names:
            n += 1
            name = f"{base}-{n}"
        names.append(name)
    return names


def serve(runs, settings=None, echo=print) -> None:
    """Serve ``runs`` on ``settings.host:settings.port`` until interrupted (SIGINT/SIGTERM:
    uvicorn finishes the requests in flight, then the batchers stop). Raises GraftError when
    the ``serve`` extra (fastapi, uvicorn, python-multipart) is not installed."""
    import importlib.util

    from graft.errors import GraftError
    from graft.serve.settings import ServeSettings

    settings = settings or ServeSettings()
    host, port = settings.host, settings.port
    missing = [package for module, package in (("fastapi", "fastapi"), ("uvicorn", "uvicorn"),
                                               ("python_multipart", "python-multipart"))
               if importlib.util.find_spec(module) is None]
    if missing:
        raise GraftError(f"graft serve needs {', '.join(missing)}: pip install 'graft[serve]'")
    import uvicorn

    from graft.serve.app import create_app

    predictors = {name: load_predictor(run) for name, run in zip(model_names(runs), runs)}
    for predictor in predictors.values():
        predictor.warm_up()
    app = create_app(predictors, settings)
    echo(f"graft serve: http://{host}:{port}/  models: {', '.join(predictors)}  (Ctrl-C stops)")
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False))
    try:
        server.run()
    except KeyboardInterrupt:
        pass
    echo("graft serve: stopped")
