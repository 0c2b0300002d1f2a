"""The model artifact on disk, without torch: one folder holding

    weights.safetensors   backbone.* (the feature network's tensors) and head.* tensors
    graft.json            format version, backbone, cut layer, preprocessing, classes, head, training

Written from numpy arrays, so a fit on cached features can save a complete model without
importing torch; :class:`graft.model.GraftModel` reads and writes the same format.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .files import atomic_path, write_atomic

FORMAT_VERSION = 1
WEIGHTS_FILE = "weights.safetensors"
CONFIG_FILE = "graft.json"


def artifact_config(backbone_info: dict, layer: str | None, preprocessing: dict, classes: list[str],
                    head_config: dict, training: dict) -> dict:
    return {
        "format_version": FORMAT_VERSION,
        "backbone": dict(backbone_info),
        "layer": layer,
        "preprocessing": dict(preprocessing),
        "classes": list(classes),
        "head": dict(head_config),
        "training": dict(training),
    }


def write_artifact(directory: str | Path, config: dict, backbone: dict[str, np.ndarray],
                   head: dict[str, np.ndarray]) -> Path:
    """Write both files; each goes to a temporary name first, then is renamed into place.

    ``backbone`` and ``head`` are the two state dicts; they are stored as ``backbone.*`` and
    ``head.*`` in one safetensors file.
    """
    from safetensors.numpy import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {f"backbone.{k}": v for k, v in backbone.items()}
    tensors.update({f"head.{k}": v for k, v in head.items()})
    with atomic_path(directory / WEIGHTS_FILE) as tmp:
        save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, str(tmp))
    write_atomic(directory / CONFIG_FILE, json.dumps(config, indent=2) + "\n")
    return directory
