"""The model artifact on disk, without torch: one folder holding

    weights.safetensors   backbone.* (the feature network's tensors) and head.* tensors
    graft.json            format version, backbone, cut layer, preprocessing, classes, head, training

Written from numpy arrays, so a fit on cached features can save a complete model without
importing torch; :class:`graft.artifacts.model.GraftModel` reads and writes the same format.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from graft._io.files import atomic_path, write_atomic

FORMAT_VERSION = 1
READABLE_VERSIONS = (1,)
WEIGHTS_FILE = "weights.safetensors"
CONFIG_FILE = "graft.json"


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


def model_folder(name) -> Path | None:
    """The model folder of a run (``RUN/model``) or of a bare artifact, or None when ``name`` is
    not a folder holding a graft model (so a string can be a registry name or a run folder)."""
    try:
        path = Path(name).expanduser()
        if not path.is_dir():
            return None
    except (TypeError, OSError):
        return None
    for candidate in (path / "model", path):
        if (candidate / CONFIG_FILE).is_file():
            return candidate.resolve()
    return None


def read_artifact_config(directory: str | Path) -> dict:
    """``graft.json`` of a model folder, checked key by key: a damaged or foreign file gives a
    :class:`~graft.errors.ModelError` naming the file and what is wrong, never a wrong label."""
    from graft.errors import ModelError

    path = Path(directory) / CONFIG_FILE
    try:
        config = json.loads(path.read_text())
    except OSError as exc:
        raise ModelError(f"{path}: cannot read ({exc.strerror or exc})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelError(f"{path}: not valid JSON ({exc})") from None
    problem = _config_problem(config)
    if problem:
        raise ModelError(f"{path}: {problem}")
    return config


def _config_problem(config) -> str | None:
    """What is wrong with a parsed graft.json, or None."""
    if not isinstance(config, dict):
        return f"expected a JSON object, found {type(config).__name__}"
    version = config.get("format_version")
    if version not in READABLE_VERSIONS:
        return (f"format version {version!r} is not one this graft reads "
                f"({', '.join(map(str, READABLE_VERSIONS))}); a newer graft may have written it")
    missing = [k for k in ("backbone", "layer", "preprocessing", "classes", "head") if k not in config]
    if missing:
        return f"missing key(s) {', '.join(missing)}"
    backbone, prep, classes, head = config["backbone"], config["preprocessing"], config["classes"], config["head"]
    if not isinstance(backbone, dict) or not all(isinstance(backbone.get(k), str) for k in ("name", "architecture")):
        return "'backbone' must be an object with string 'name' and 'architecture'"
    if config["layer"] is not None and not isinstance(config["layer"], str):
        return f"'layer' must be a layer name or null, found {config['layer']!r}"
    if not isinstance(prep, dict):
        return "'preprocessing' must be an object"
    for key, kind in (("size", int), ("interpolation", str), ("crop_pct", (int, float)), ("mean", list), ("std", list)):
        if not isinstance(prep.get(key), kind) or isinstance(prep.get(key), bool):
            return f"'preprocessing.{key}' is missing or of the wrong type ({prep.get(key)!r})"
    numbers = all(isinstance(v, (int, float)) for v in prep["mean"] + prep["std"])
    if len(prep["mean"]) != 3 or len(prep["std"]) != 3 or not numbers:
        return "'preprocessing.mean' and 'preprocessing.std' must be three numbers each"
    if not isinstance(classes, list) or not classes or not all(isinstance(c, str) for c in classes):
        return f"'classes' must be a non-empty list of class names, found {str(classes)[:80]}"
    if len(set(classes)) != len(classes):
        return "'classes' has duplicate names"
    if not isinstance(head, dict) or not isinstance(head.get("kind"), str):
        return "'head' must be an object with a 'kind'"
    if head.get("num_classes") != len(classes):
        return (f"the head has {head.get('num_classes')!r} outputs but 'classes' names {len(classes)}: "
                "labels would not match scores")
    return None


def refuse_projector(config: dict, config_path) -> None:
    """ModelError when ``config`` (a graft.json) is a SimSiam run's model: its head is a projector
    with no classes, so predicting, evaluating or exporting it means nothing; it is a backbone."""
    from graft.errors import ModelError

    if isinstance(config.get("head"), dict) and config["head"].get("kind") == "simsiam-projector":
        raise ModelError(f"{config_path}: a graft pretrain --unlabelled --objective simsiam model (head "
                         "'simsiam-projector': no classes to predict); use its run as a backbone: graft fit "
                         "DATA --backbone RUN")
