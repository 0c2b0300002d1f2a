"""``--format openvino``: OpenVINO IR (``model.xml`` + ``model.bin``) converted from the float
ONNX export by OpenVINO's own reader (``openvino.convert_model``), weights kept in float32.

The IR has the ONNX model's input (``images``, dynamic batch) and outputs (``logits``,
``probabilities``, ``features``); graft's metadata (classes, preprocessing, the input recipe,
the source digests) is the IR's ``rt_info`` under the same ``graft.*`` keys as the ONNX
metadata (``model.get_rt_info(["graft.classes"])``). Before it is written, OpenVINO's CPU
runtime (f32 precision) runs it on the run's own images and its probabilities must equal ONNX
Runtime's to 1e-4. On CPUs with bf16 units OpenVINO defaults to bf16 inference; pass
``INFERENCE_PRECISION_HINT: f32`` to ``compile_model`` for the numbers checked here.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np

from graft.artifacts.exports.images import check_images, input_rows
from graft.errors import GraftError, ModelError

ATOL = 1e-4  # probabilities, OpenVINO vs ONNX Runtime


def is_export(path: Path) -> bool:
    try:
        return path.suffix == ".xml" and '<graft.format value="' in path.read_text(errors="replace")
    except OSError:
        return False


def compare_with_onnx(xml: Path, onnx_path: Path, rows: np.ndarray) -> float:
    """Max |difference| of the probabilities of OpenVINO (CPU, f32) and ONNX Runtime on ``rows``."""
    import openvino as ov

    from graft._io.onnx import ort_session

    compiled = ov.Core().compile_model(str(xml), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    got = compiled(rows)[compiled.output("probabilities")]
    expected = ort_session(onnx_path).run(["probabilities"], {"images": rows})[0]
    return float(np.abs(got - expected).max())


def write(job) -> list[str]:
    import openvino as ov

    xml, weights = job.path, job.path.with_suffix(".bin")
    if xml.suffix != ".xml":
        raise GraftError(f"--out {xml}: an OpenVINO IR is a .xml file (its weights go beside it as .bin)")
    if weights.exists() and not (xml.exists() and is_export(xml)):
        raise GraftError(f"{weights} exists and is not part of an earlier graft export; graft will not overwrite it")
    model = ov.convert_model(str(job.onnx_path))
    for key, value in job.metadata.items():
        model.set_rt_info(value, [key])
    staged = job.onnx_path.parent / "ir"
    ov.save_model(model, str(staged / "model.xml"), compress_to_fp16=False)
    paths = check_images(job.run_dir)
    rows, _ = input_rows(paths, job.model.preprocessing.to_dict(), job.settings.input_type)
    what = f"{len(rows)} of the run's images"
    if not len(rows):  # a bare model folder: no images of its own
        rng = np.random.default_rng(0)
        size = job.model.preprocessing.size
        rows = (rng.integers(0, 256, (4, size, size, 3), dtype=np.uint8) if job.settings.input_type == "uint8"
                else rng.uniform(-2, 2, (4, 3, size, size)).astype(np.float32))
        what = "4 random inputs (no split.csv with the run's images)"
    diff = compare_with_onnx(staged / "model.xml", job.onnx_path, rows)
    if diff > ATOL:
        raise ModelError(f"OpenVINO's probabilities differ from ONNX Runtime's by {diff:.2e} (> {ATOL:g}): "
                         "nothing written")
    xml.parent.mkdir(parents=True, exist_ok=True)
    for name, target in (("model.bin", weights), ("model.xml", xml)):  # the .xml last: it names a complete IR
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        shutil.copyfile(staged / name, tmp)
        os.replace(tmp, target)
    return [f"OpenVINO (CPU, f32) vs ONNX Runtime on {what}: max |diff| of probabilities {diff:.2e}",
            f"wrote {xml} and {weights.name}"]
