"""What runs the network for :class:`~graft.inference.predictor.Predictor`: a batch of input rows ->
the model's outputs ``logits`` (N, C), ``probabilities`` (N, C) and pooled ``features`` (N, D).

:class:`OnnxBackend` runs a current ``model.onnx`` (:func:`graft.inference.exports.current_export`)
in ONNX Runtime, with no torch imported; :class:`TorchBackend` runs the saved
:class:`~graft.artifacts.model.GraftModel` in eager torch, for when ONNX Runtime is not
installed, cannot export the model, or is not wanted (``--engine torch``).
"""
from __future__ import annotations

import json

import numpy as np


class OnnxBackend:
    """A model's ONNX export in ONNX Runtime. ``input_type``: "float" or "uint8" (the export's
    input, from its metadata); ``source``: the model folder's digests the export was made from;
    ``exported``: whether loading wrote the export."""

    name = "onnx"

    def __init__(self, session, exported: bool = False):
        self.session = session
        self.exported = exported
        meta = session.get_modelmeta().custom_metadata_map
        self.input_type = json.loads(meta["graft.input"])["type"]
        self.source = json.loads(meta["graft.source"])

    @classmethod
    def load(cls, run_dir, threads: int | None = None, export: bool = True):
        """``(model_dir, backend)`` for a run or model folder, exporting model.onnx once when it
        is missing or stale and ``export`` is True. Raises ModelError (see ``current_export``)."""
        from graft.inference.exports import current_export

        model_dir, session, exported = current_export(run_dir, threads, export)
        return model_dir, cls(session, exported)

    def run(self, rows: np.ndarray, outputs: list[str]) -> list[np.ndarray]:
        return self.session.run(outputs, {"images": rows})


class TorchBackend:
    """The saved model in eager torch, on float input rows (3, S, S)."""

    name = "torch"
    input_type = "float"
    session = None
    exported = False

    def __init__(self, model):
        self.model = model.eval()

    @classmethod
    def load(cls, run_dir):
        """``(model_dir, backend)``; raises ModelError for a folder that holds no loadable model."""
        from graft._io.artifact import model_folder
        from graft.artifacts.model import GraftModel

        model = GraftModel.load(run_dir)
        return model_folder(run_dir), cls(model)

    def run(self, rows: np.ndarray, outputs: list[str]) -> list[np.ndarray]:
        import torch

        from graft.heads.modules import head_probabilities

        with torch.inference_mode():
            features = self.model.features(torch.from_numpy(rows))
            logits = self.model.head(features)
            probabilities = head_probabilities(self.model.head, logits)
            found = {"features": features, "logits": logits, "probabilities": probabilities}
        return [found[name].numpy() for name in outputs]
