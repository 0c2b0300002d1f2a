"""``--format coreml``: a Core ML classifier (ML Program, ``.mlpackage``, float32) converted from
the torch model by coremltools (through ``torch.export``: timm's "same" padding, traced, is
dynamic shape arithmetic that coremltools' TorchScript frontend cannot convert).

Input ``image``: an RGB image of the model's size (what Vision hands a Core ML classifier, pixel
values 0-255); the model normalises it itself with the run's mean and std (Core ML's image
preprocessing has one scale for all channels, not the per-channel std). The caller resizes and
centre-crops as the input recipe says (``graft.input_recipe`` in the metadata, or Vision's
``centerCrop`` option after scaling the shorter side). Outputs: ``classLabel`` (the top class),
``probabilities`` (class name -> probability), ``logits`` (1, C) and ``features`` (1, D), the
pooled features. graft's metadata (classes, preprocessing, input recipe, source digests) is the
model's ``userDefined`` metadata under the same ``graft.*`` keys as the ONNX export.

Core ML runs only on Apple's systems: here the export checks the network it converted (torch,
with the normalisation inside) against the ONNX model on the run's own images (probabilities to
1e-4), and the converted model's structure, inputs, outputs and class labels.
"""
from __future__ import annotations

import contextlib
import io
import logging
import os
import shutil
import warnings
from pathlib import Path

import numpy as np

from graft.artifacts.exports.images import check_images, input_rows
from graft.errors import GraftError, ModelError

ATOL = 1e-4


def is_export(path: Path) -> bool:
    """An .mlpackage whose model carries graft's metadata."""
    manifest = path / "Manifest.json"
    if path.suffix != ".mlpackage" or not manifest.is_file():
        return False
    return any(b"graft.format" in spec.read_bytes() for spec in path.glob("Data/com.apple.CoreML/*.mlmodel"))


def pixel_network(model):
    """(1, 3, S, S) float RGB pixels 0-255 -> (logits, probabilities, pooled features) of ``model``."""
    import torch
    from torch import nn

    from graft.artifacts.export import ExportOutputs

    class Normalised(nn.Module):
        def __init__(self, features, mean, std):
            super().__init__()
            self.features = features
            # as graft.data.preprocess.Preprocessing.normalize: (x - 255 * mean) * (1 / (255 * std))
            self.register_buffer("mean", torch.tensor(np.float32(255) * np.asarray(mean, np.float32)).view(1, 3, 1, 1))
            self.register_buffer("inv_std", torch.tensor(
                np.float32(1) / (np.float32(255) * np.asarray(std, np.float32))).view(1, 3, 1, 1))

        def forward(self, pixels):
            return self.features((pixels - self.mean) * self.inv_std)

    prep = model.preprocessing
    return ExportOutputs(Normalised(model.features, prep.mean, prep.std), model.head).eval()


def check_against_onnx(network, onnx_path: Path, paths, preprocessing: dict) -> tuple[float, int]:
    """Max |difference| of the probabilities of ``network`` (pixels in) and the ONNX export
    (normalised input) on the images ``paths``, and how many were compared."""
    import torch

    from graft._io.onnx import ort_session

    pixels, _ = input_rows(paths, preprocessing, "uint8")
    normalised, _ = input_rows(paths, preprocessing, "float")
    if not len(pixels):
        return 0.0, 0
    with torch.inference_mode():
        got = network(torch.from_numpy(pixels).permute(0, 3, 1, 2).float())[1].numpy()
    expected = ort_session(onnx_path).run(["probabilities"], {"images": normalised})[0]
    return float(np.abs(got - expected).max()), len(pixels)


def convert(network, size: int, classes: list[str], metadata: dict):
    """The coremltools MLModel of ``network``: image input, classifier outputs, graft's metadata."""
    import torch

    # coremltools logs, at import, the versions it has not been tested with and the macOS-only
    # runtime it cannot load, and draws progress bars: none of it is graft's output
    logging.getLogger("coremltools").setLevel(logging.ERROR)
    with contextlib.redirect_stderr(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import coremltools as ct

        program = torch.export.export(network, (torch.zeros(1, 3, size, size),)).run_decompositions({})
        logits, probabilities, features = program.graph_signature.user_outputs
        mlmodel = ct.convert(
            program, inputs=[ct.ImageType(name="image", shape=(1, 3, size, size), color_layout=ct.colorlayout.RGB)],
            classifier_config=ct.ClassifierConfig(list(classes), predicted_probabilities_output=probabilities),
            convert_to="mlprogram", compute_precision=ct.precision.FLOAT32,
            minimum_deployment_target=ct.target.macOS13)
    spec = mlmodel.get_spec()
    for old, new in ((spec.description.predictedProbabilitiesName, "probabilities"), (logits, "logits"),
                     (features, "features")):
        ct.utils.rename_feature(spec, old, new)
    for key, value in metadata.items():
        spec.description.metadata.userDefined[key] = value
    spec.description.metadata.shortDescription = (f"graft classifier of {len(classes)} classes; input: the "
                                                  "centre-cropped RGB image (graft.input_recipe)")
    return ct.models.MLModel(spec, weights_dir=mlmodel.weights_dir)


def write(job) -> list[str]:
    if "graft.tasks" in job.metadata:
        raise GraftError("--format coreml writes a classifier of one task; this is a multi-task model: "
                         "export it as ONNX or OpenVINO")
    if job.path.suffix != ".mlpackage":
        raise GraftError(f"--out {job.path}: a Core ML ML Program is a .mlpackage folder")
    network = pixel_network(job.model)
    prep = job.model.preprocessing
    diff, compared = check_against_onnx(network, job.onnx_path, check_images(job.run_dir), prep.to_dict())
    if diff > ATOL:
        raise ModelError(f"the network converted to Core ML differs from the ONNX export by {diff:.2e} (> {ATOL:g}) "
                         "in probabilities: nothing written")
    staged = job.onnx_path.parent / "model.mlpackage"
    convert(network, prep.size, job.model.classes, {**job.metadata, "graft.input": _input_entry(prep.size)}).save(
        str(staged))
    old = job.path.with_name(f".{job.path.name}.{os.getpid()}.old")
    job.path.parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(staged, job.path.with_name(f".{job.path.name}.{os.getpid()}.tmp"))
    if job.path.exists():  # an earlier graft export (checked): moved aside, then removed
        os.replace(job.path, old)
    os.replace(job.path.with_name(f".{job.path.name}.{os.getpid()}.tmp"), job.path)
    shutil.rmtree(old, ignore_errors=True)
    checked = (f"the converted network (pixels in, normalised inside) vs ONNX Runtime on {compared} of the run's "
               f"images: max |diff| of probabilities {diff:.2e}" if compared else
               "no split.csv with the run's images: the converted network was not compared with ONNX")
    return [checked, f"wrote {job.path} (Core ML runs on Apple's systems only: its predictions were not run here)"]


def _input_entry(size: int) -> str:
    import json

    return json.dumps({"name": "image", "type": "image", "layout": f"RGB image {size} x {size}, pixels 0-255",
                       "size": size})
