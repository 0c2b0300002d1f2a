"""The names ``graft serve`` and ``graft predict`` used before :mod:`graft.inference` held them.

:class:`OnnxPredictor` is :class:`graft.inference.Predictor` (``OnnxPredictor.load(run)`` gives
the ONNX Runtime engine, as before); the rest are the same objects. New code imports
:mod:`graft.inference`.
"""
from __future__ import annotations

from graft.inference.exports import REQUIRED_OUTPUTS, current_export, default_onnx_path
from graft.inference.predictor import PIECE, Batch, Predictor, task_slices, top_per_task

OnnxPredictor = Predictor

__all__ = ["PIECE", "REQUIRED_OUTPUTS", "Batch", "OnnxPredictor", "current_export", "default_onnx_path",
           "task_slices", "top_per_task"]
