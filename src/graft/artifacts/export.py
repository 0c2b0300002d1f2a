"""``graft export``: a saved model as ONNX, verified against torch on the spot.

The ONNX file carries what a third party needs to use it (class names, the preprocessing and
the full input recipe of :func:`graft.data.preprocess.input_recipe`) as ONNX metadata. Two input
forms:

* ``float`` (default): ``images`` float32 (N, 3, S, S), already normalised;
* ``uint8``: ``images`` uint8 (N, S, S, 3), the cropped RGB pixels; the model normalises them
  itself, so a user's code only decodes, resizes and crops.

Three outputs: ``logits`` (N, C), ``probabilities`` (N, C) and ``features`` (N, D), the pooled
backbone features the head reads (what :mod:`graft.artifacts.novelty` scores). The metadata
``graft.source`` holds the digests of the model folder's files, so ``graft predict`` and
``graft serve`` can tell a current export from a stale one. A multi-task model's columns hold
every task's classes side by side (``probabilities`` is a softmax per task, so a row sums to the
number of tasks): ``graft.tasks`` lists each task's ``name``, its columns ``start:stop`` (Python
slice, end excluded) and its ``classes``.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from torch import nn

from graft._io.artifact import model_folder
from graft._io.onnx import export_onnx, ort_session
from graft.artifacts.model import GraftModel
from graft.artifacts.version import model_source
from graft.errors import GraftError, ModelError
from graft.heads.modules import head_probabilities

INPUT_TYPES = ("float", "uint8")
EXPORT_FORMAT = "graft-onnx-1"  # metadata_props["graft.format"] of every graft export


class Uint8Input(nn.Module):
    """(N, S, S, 3) uint8 RGB -> the normalised (N, 3, S, S) float input of ``model``.

    The arithmetic is :meth:`graft.data.preprocess.Preprocessing.normalize`'s, in the same order:
    ``(x - 255 * mean) * (1 / (255 * std))``.
    """

    def __init__(self, model: nn.Module, mean, std):
        super().__init__()
        self.model = model
        mean = np.asarray(mean, np.float32) * np.float32(255.0)
        inv_std = np.float32(1.0) / (np.asarray(std, np.float32) * np.float32(255.0))
        self.register_buffer("mean", torch.from_numpy(mean).view(1, 3, 1, 1))
        self.register_buffer("inv_std", torch.from_numpy(inv_std).view(1, 3, 1, 1))

    def forward(self, images):
        x = images.permute(0, 3, 1, 2).to(torch.float32)
        return self.model((x - self.mean) * self.inv_std)


class ExportOutputs(nn.Module):
    """images -> (logits, probabilities, pooled features): the outputs of an exported model.

    ``features``: the network from images to pooled features (the model's, or it wrapped in
    :class:`Uint8Input`); ``head``: the classifier on them."""

    def __init__(self, features: nn.Module, head: nn.Module):
        super().__init__()
        self.features = features
        self.head = head

    def forward(self, images):
        pooled = self.features(images)
        logits = self.head(pooled)
        return logits, head_probabilities(self.head, logits), pooled


OUTPUTS = ["logits", "probabilities", "features"]


def default_export_path(run_dir: Path, suffix: str = ".onnx") -> Path:
    """RUN/model.onnx for a run folder; <folder>.onnx beside a bare model folder (``suffix``:
    the format's, e.g. RUN/model.xml for OpenVINO)."""
    run_dir = Path(run_dir)
    if (run_dir / "model").is_dir():
        return run_dir / f"model{suffix}"
    return run_dir.parent / f"{run_dir.name}{suffix}"


def is_graft_export(path: Path) -> bool:
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception:  # not ONNX at all
        return False
    return any(p.key == "graft.format" for p in model.metadata_props)


def _check_destination(run_dir: Path, path: Path, is_export=is_graft_export, folder_format: bool = False) -> None:
    """``path`` may be written: outside the model folder, and new or an earlier graft export
    (``is_export``; ``folder_format``: the format is itself a folder, as Core ML's .mlpackage)."""
    model_dir = (run_dir / "model" if (run_dir / "model").is_dir() else run_dir).resolve()
    target = path.resolve()
    if target == model_dir or model_dir in target.parents:
        raise GraftError(f"--out {path} is inside the model folder {model_dir}: graft export never writes there "
                         "(the artifact must stay as training left it); choose another path")
    if target.is_dir() and not folder_format:
        raise GraftError(f"--out {path} is a folder; name the file to write")
    if target.exists() and not is_export(target):
        raise GraftError(f"--out {path} exists and is not an earlier graft export; graft will not overwrite it. "
                         "Remove it or choose another path")


def export_and_verify(run_dir, out=None, atol: float = 1e-4, input_type: str = "float",
                      model: GraftModel | None = None) -> tuple[Path, float]:
    """Write the float ONNX export of ``run_dir``'s model (``model``: it, already loaded) to
    ``out`` (default RUN/model.onnx) and check ONNX Runtime's logits against torch's on two
    random inputs: ``(path, max |diff|)``. Raises ModelError when they differ by more than ``atol``
    (relative to the logits' size), GraftError for a path it must not write."""
    if input_type not in INPUT_TYPES:
        raise GraftError(f"unknown input type {input_type!r}: {', '.join(INPUT_TYPES)}")
    run_dir = Path(run_dir)
    path = Path(out) if out else default_export_path(run_dir)
    _check_destination(run_dir, path)
    model = (model or GraftModel.load(run_dir)).eval()
    prep = model.preprocessing
    features = Uint8Input(model.features, prep.mean, prep.std) if input_type == "uint8" else model.features
    export_onnx(ExportOutputs(features, model.head), path, prep.size, OUTPUTS,
                input_dtype=torch.uint8 if input_type == "uint8" else torch.float32,
                channels_last=input_type == "uint8")
    write_onnx_metadata(path, export_metadata(model, input_type, model_source(model_folder(run_dir))))

    rng = np.random.default_rng(0)
    if input_type == "uint8":
        feed = rng.integers(0, 256, (2, prep.size, prep.size, 3), dtype=np.uint8)
        images = torch.from_numpy(np.stack([prep.normalize(image) for image in feed]))
    else:
        feed = rng.uniform(-1, 1, (2, 3, prep.size, prep.size)).astype(np.float32)
        images = torch.from_numpy(feed)
    with torch.inference_mode():
        expected = model(images).numpy()
    got = ort_session(path).run(["logits"], {"images": feed})[0]
    max_diff = float(np.abs(got - expected).max())
    scale = max(1.0, float(np.abs(expected).max()))  # float32 rounding grows with the logits' size
    if max_diff > atol * scale:
        raise ModelError(f"exported {path} differs from torch by {max_diff:.2e} (> {atol:g} x {scale:.3g})")
    return path, max_diff


def export_metadata(model: GraftModel, input_type: str, source: dict) -> dict:
    """What every export records (strings, ``graft.*`` keys): class names, preprocessing, the
    input recipe of graft.json, the input and outputs, the backbone and the source digests."""
    config = model.config()
    layout = "uint8 (N, H, W, 3) RGB" if input_type == "uint8" else "float32 (N, 3, H, W) normalised RGB"
    entries = {
        "graft.format": EXPORT_FORMAT,
        "graft.classes": json.dumps(model.classes),
        "graft.preprocessing": json.dumps(config["preprocessing"]),
        "graft.input_recipe": json.dumps(config["input_recipe"]),
        "graft.input": json.dumps({"name": "images", "type": input_type, "layout": layout,
                                   "size": model.preprocessing.size}),
        "graft.outputs": json.dumps(OUTPUTS),
        "graft.backbone": json.dumps(config["backbone"]),
        "graft.source": json.dumps(source),
    }
    slices = getattr(model.head, "slices", None)
    if slices:  # a multi-task head: whose columns are whose (each task's probabilities sum to 1)
        entries["graft.tasks"] = json.dumps([
            {"name": task["name"], "start": slices[task["name"]].start, "stop": slices[task["name"]].stop,
             "classes": task["classes"]} for task in model.head.tasks])
    return entries


def write_onnx_metadata(path: Path, entries: dict) -> None:
    """``entries`` as the ONNX file's metadata_props (replacing any), atomically."""
    import onnx

    from graft._io.files import atomic_path

    proto = onnx.load(str(path))
    del proto.metadata_props[:]
    for key, value in entries.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    with atomic_path(path) as tmp:
        onnx.save(proto, str(tmp))


def export_model(settings) -> list[str]:
    """``graft export``: write the run's model in ``settings.format`` (a registered
    :class:`graft.artifacts.exports.ExportFormat`) and return the lines to print.

    ``settings``: the export command's Config (``run_dir``, ``format``, ``out``, ``input_type``,
    ``int8``...). Every format starts from the float ONNX export checked against torch (a
    temporary file for formats other than onnx) and checks its own file against it where its
    runtime runs here. Raises GraftError before anything is written for a missing extra, an
    option the format does not take or a destination graft must not write; ModelError when a
    check fails (nothing is left at the destination)."""
    import tempfile

    from graft.artifacts.exports import FORMATS, ExportJob, check_available, get_format

    fmt = get_format(settings.format)
    check_available(fmt)
    if getattr(settings, "int8", False) and "int8" not in fmt.options:
        takes = " or ".join(name for name, f in FORMATS.items() if "int8" in f.options)
        raise GraftError(f"--int8 is a setting of --format {takes}, not of --format {fmt.name}")
    if settings.input_type not in fmt.inputs:
        raise GraftError(f"--format {fmt.name} takes --input {' or '.join(fmt.inputs)}, not {settings.input_type}")
    run_dir = Path(settings.run_dir)
    model_dir = model_folder(run_dir)
    if model_dir is None:
        raise ModelError(f"{run_dir} is not a graft model: expected graft.json and weights.safetensors "
                         "(or a run folder holding model/)")
    path = Path(settings.out) if settings.out else default_export_path(run_dir, fmt.suffix)
    _check_destination(run_dir, path, fmt.is_export, folder_format=fmt.suffix == ".mlpackage")
    model = GraftModel.load(run_dir).eval()
    with tempfile.TemporaryDirectory(prefix="graft-export-") as tmp:
        onnx_path, max_diff = export_and_verify(run_dir, Path(tmp) / "model.onnx", input_type=settings.input_type,
                                                model=model)
        job = ExportJob(model, model_dir, model_dir.parent if model_dir.name == "model" else None, onnx_path, path,
                        settings, export_metadata(model, settings.input_type, model_source(model_dir)))
        return [f"ONNX Runtime vs torch: max |diff| {max_diff:.2e}", *fmt.write(job)]
