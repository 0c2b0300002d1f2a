"""Using a trained model: one inference path for every command.

:class:`Predictor` (``predictor.py``) answers for images on ONNX Runtime (a current
``model.onnx``, no torch imported) or on torch (the saved model); ``graft predict``, ``graft
evaluate`` and ``graft serve`` all go through it, so they agree bit for bit on one engine.
Decoding reads a path or bytes by graft's rules in a bounded window (``decoding.py``); the
ONNX export is found or made once (``exports.py``); ONNX Runtime sessions come from graft's one
factory, :func:`graft._io.onnx.ort_session`, and cached graphs live in one folder,
:func:`graft._io.onnx.onnx_cache`. Importing this package imports neither torch nor timm.
"""
from graft.inference.exports import current_export, default_onnx_path
from graft.inference.predictor import Batch, Predictor, open_predictor, saved_config, task_slices, top_per_task

__all__ = ["Batch", "Predictor", "current_export", "default_onnx_path", "open_predictor", "saved_config",
           "task_slices", "top_per_task"]
