"""A model folder's identity, without torch: which weights and config an ONNX export came from.

``graft export`` writes the digest into the ONNX metadata (``graft.source``); ``graft predict``
and ``graft serve`` compare it with the folder's to know whether ``model.onnx`` is current, and
report the weights' digest as the model's version.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

from graft._io.artifact import CONFIG_FILE, WEIGHTS_FILE


def file_sha256(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def model_source(model_dir: str | Path) -> dict:
    """``{"weights_sha256", "config_sha256"}`` of a model folder (weights.safetensors, graft.json)."""
    model_dir = Path(model_dir)
    return {"weights_sha256": file_sha256(model_dir / WEIGHTS_FILE),
            "config_sha256": file_sha256(model_dir / CONFIG_FILE)}
