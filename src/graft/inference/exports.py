"""A current ONNX export of a model folder, found or made once: what the ONNX Runtime backend runs.

The export is current when its ``graft.source`` metadata matches the digests of the model
folder's ``weights.safetensors`` and ``graft.json`` and it has the outputs the predictor reads
(:data:`REQUIRED_OUTPUTS`). It is looked for in the run (``RUN/model.onnx``, where ``graft
export`` writes it), then in graft's cache (``onnx/models/``, :func:`graft._io.onnx.onnx_cache`);
when neither is current, :func:`current_export` exports once (that step imports torch) into the
run, or into the cache when the run cannot be written.
"""
from __future__ import annotations

import json
from pathlib import Path

from graft._io.artifact import model_folder
from graft._io.onnx import onnx_cache, ort_session
from graft.artifacts.version import model_source
from graft.errors import GraftError, ModelError

REQUIRED_OUTPUTS = ("logits", "probabilities", "features")


def default_onnx_path(model_dir: Path) -> Path:
    """RUN/model.onnx for RUN/model; <folder>.onnx beside a bare model folder (as ``graft export``)."""
    model_dir = Path(model_dir)
    if model_dir.name == "model" and (model_dir.parent / "model").is_dir():
        return model_dir.parent / "model.onnx"
    return model_dir.parent / f"{model_dir.name}.onnx"


def cached_onnx_path(source: dict) -> Path:
    """The export of a model in graft's cache, named by its weights' and graft.json's digests."""
    return onnx_cache("models", f"{source['weights_sha256'][:16]}-{source['config_sha256'][:16]}.onnx")


def _current_session(path: Path, source: dict, threads: int | None):
    """An ONNX Runtime session of ``path`` when it is a current export of ``source``, else None."""
    if not path.is_file():
        return None
    try:
        session = ort_session(path, threads, keep_optimised=True)
    except Exception:  # not ONNX, or damaged: treated as missing and exported again
        return None
    meta = session.get_modelmeta().custom_metadata_map
    outputs = {o.name for o in session.get_outputs()}
    try:
        current = json.loads(meta.get("graft.source", "null")) == source
    except json.JSONDecodeError:
        current = False
    return session if current and outputs.issuperset(REQUIRED_OUTPUTS) else None


def current_export(run_dir, threads: int | None = None, export: bool = True):
    """``(model_dir, session, exported)``: an ONNX Runtime session of a current export of the
    run's model (``threads``: intra-op threads, default every core); ``exported``: whether this
    call wrote it.

    Raises :class:`~graft.errors.ModelError` when ``run_dir`` holds no model, when there is no
    current export and ``export`` is False, or when exporting fails.
    """
    model_dir = model_folder(run_dir)
    if model_dir is None:
        raise ModelError(f"{run_dir} is not a graft model: expected graft.json and weights.safetensors "
                         "(or a run folder holding model/)")
    source = model_source(model_dir)
    candidates = [default_onnx_path(model_dir), cached_onnx_path(source)]
    for path in candidates:  # the run's own export first: the usual case
        session = _current_session(path, source, threads)
        if session is not None:
            return model_dir, session, False
    if not export:
        raise ModelError(f"{model_dir}: no current model.onnx (run `graft export {run_dir}`)")
    from graft.artifacts.export import export_and_verify  # imports torch: once per model change

    for path in candidates:
        try:
            export_and_verify(model_dir, path)
        except (OSError, GraftError) as exc:  # a read-only run, or a foreign file in the way
            if path == candidates[-1]:
                raise ModelError(f"cannot export {model_dir} to ONNX: {exc}") from None
            continue
        session = _current_session(path, source, threads)
        if session is not None:
            return model_dir, session, True
    raise ModelError(f"{model_dir}: the ONNX export does not match the model folder")
