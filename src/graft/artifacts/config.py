"""graft.json's content for a model: the format version, backbone, cut layer, preprocessing and
the written input recipe, classes, head and how it was trained (read and written by
:mod:`graft._io.artifact`, which stays torch- and preprocessing-free)."""
from __future__ import annotations

from graft._io.artifact import FORMAT_VERSION
from graft.data.preprocess import input_recipe


def artifact_config(backbone_info: dict, layer: str | None, preprocessing: dict, classes: list[str],
                    head_config: dict, training: dict) -> dict:
    return {
        "format_version": FORMAT_VERSION,
        "backbone": dict(backbone_info),
        "layer": layer,
        "preprocessing": dict(preprocessing),
        "input_recipe": input_recipe(preprocessing),
        "classes": list(classes),
        "head": dict(head_config),
        "training": dict(training),
    }
