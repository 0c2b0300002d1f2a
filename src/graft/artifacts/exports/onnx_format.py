"""``--format onnx``: the float export as it is, or (``--int8``) quantised to int8 by ONNX Runtime.

int8 is ONNX Runtime's static quantisation (QDQ: per-channel int8 weights, uint8 activations,
ranges from the 99.99th percentile of each activation; the setting measured in BENCHMARKS.md,
issue 12), calibrated on the run's own training images (``split.csv``). Only the network up to
the pooled features is quantised: the head and its softmax stay float, as trained. The result is
a plain ONNX file with the same inputs, outputs and metadata (plus ``graft.quantization``), so
``graft predict`` and ``graft serve`` run it as they run the float one.

Before it is written, both models predict the run's validation images: the export reports the
accuracy change and refuses (nothing written) when int8 loses more than ``int8_max_loss``
points. Refusing rather than warning: at RUN/model.onnx the int8 file is what predict and serve
run from then on, without saying so, so a warning seen once would leave a worse model serving.
"""
from __future__ import annotations

import contextlib
import io
import json
import shutil
from pathlib import Path

import numpy as np

from graft.artifacts.exports.images import input_rows, run_in_pieces, split_rows, spread
from graft.errors import GraftError


def is_export(path: Path) -> bool:
    from graft.artifacts.export import is_graft_export

    return is_graft_export(path)


def write(job) -> list[str]:
    from graft._io.files import atomic_path

    if not job.settings.int8:
        with atomic_path(job.path) as tmp:
            shutil.copyfile(job.onnx_path, tmp)
        return [f"wrote {job.path}"]
    lines, quantised = quantise_checked(job)
    with atomic_path(job.path) as tmp:
        shutil.copyfile(quantised, tmp)
    from graft.artifacts.export import default_export_path

    if job.path.resolve() != default_export_path(Path(job.settings.run_dir)).resolve():  # not the file predict runs
        return [*lines, f"wrote {job.path} (int8)"]
    return [*lines, f"wrote {job.path} (int8; graft predict and graft serve run it; "
                    f"`graft export {job.settings.run_dir}` writes the float model again)"]


def quantise_checked(job) -> tuple[list[str], Path]:
    """Quantise ``job.onnx_path`` next to it, compare it with the float model on the validation
    images and return (the report lines, the int8 file); GraftError when it loses too much."""
    from graft.artifacts.export import write_onnx_metadata

    if "graft.tasks" in job.metadata:
        raise GraftError("--int8 checks one task's validation accuracy; this is a multi-task model: export it in float")
    train, val = split_rows(job.run_dir, "train"), split_rows(job.run_dir, "val")
    where = job.run_dir / "split.csv" if job.run_dir else f"a split.csv beside {job.model_dir}"
    if not train or not val:
        raise GraftError(f"--int8 calibrates on the run's training images and checks it on its validation images, "
                         f"listed in {where}: {'none found' if not (train or val) else 'no validation rows there'}")
    preprocessing, input_type = job.model.preprocessing.to_dict(), job.settings.input_type
    calibration, _ = input_rows([p for p, _ in spread(train, job.settings.calibration_images)], preprocessing,
                                input_type)
    if not len(calibration):
        raise GraftError(f"--int8: none of the training images listed in {where} could be read to calibrate on")
    out = job.onnx_path.with_name("model.int8.onnx")
    quantise(job.onnx_path, calibration, out)
    from graft.artifacts.novelty import Novelty

    check = compare_on(job.onnx_path, out, val, job.model.classes, preprocessing, input_type,
                       Novelty.load(job.model_dir))
    check.update(calibration_images=len(calibration), method="onnxruntime static QDQ, per-channel int8 weights, "
                 "uint8 activations, percentile 99.99 calibration; head and softmax in float")
    loss = 100 * (check["float_accuracy"] - check["int8_accuracy"])
    line = (f"int8 vs float on {check['images']} validation images: accuracy {check['float_accuracy']:.4f} -> "
            f"{check['int8_accuracy']:.4f} ({-loss:+.2f} points), same top class for {check['agreement']:.1%}, "
            f"max |diff| of probabilities {check['max_probability_diff']:.3f}"
            + (f", unfamiliar {check['float_unfamiliar']} -> {check['int8_unfamiliar']}" if "int8_unfamiliar" in check
               else "") + f"; calibrated on {len(calibration)} training images")
    if loss > job.settings.int8_max_loss:
        raise GraftError(f"{line}. int8 loses more than --int8-max-loss {job.settings.int8_max_loss:g} points: "
                         f"nothing written (keep the float export, or pass --int8-max-loss {np.ceil(loss):g} "
                         "to accept the loss)")
    write_onnx_metadata(out, {**job.metadata, "graft.quantization": json.dumps({"type": "int8", **check})})
    return [line], out


def quantise(float_path: Path, calibration: np.ndarray, out: Path, piece: int = 4) -> Path:
    """ONNX Runtime's static QDQ quantisation of ``float_path`` into ``out``, activation ranges
    calibrated on ``calibration`` (the network's input rows); the nodes after the pooled features
    (the head, the softmax) are left in float."""
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Batches(CalibrationDataReader):
        """The calibration rows in batches of ``piece``; ``set_range`` lets ONNX Runtime fold one
        batch at a time into its histograms (CalibStridedMinMax=1): otherwise it keeps every
        activation of every image until the end (~75 MB an image for lite0: 15 GB for 200)."""

        def __init__(self):
            self.starts = list(range(0, len(calibration), piece))
            self.set_range(0, len(self.starts))

        def __len__(self):
            return len(self.starts)

        def set_range(self, start_index: int, end_index: int):
            self.batches = iter(self.starts[start_index:end_index])

        def get_next(self):
            start = next(self.batches, None)
            return None if start is None else {"images": calibration[start:start + piece]}

    prepared = out.with_name(out.stem + ".prepared.onnx")
    quant_pre_process(str(float_path), str(prepared))
    head = [n.name for n in onnx.load(str(prepared), load_external_data=False).graph.node
            if not n.name.startswith("/features/")]
    with contextlib.redirect_stdout(io.StringIO()):  # its progress prints are not graft's output
        quantize_static(str(prepared), str(out), Batches(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, nodes_to_exclude=head,
                        calibrate_method=CalibrationMethod.Percentile,
                        extra_options={"CalibPercentile": 99.99, "CalibStridedMinMax": 1})
    prepared.unlink(missing_ok=True)
    return out


def compare_on(float_path: Path, int8_path: Path, rows: list[tuple[str, str]], classes: list[str],
               preprocessing: dict, input_type: str, novelty=None) -> dict:
    """Accuracy of both models on ``rows`` (path, class) of known classes, how often their top
    classes agree, the largest probability difference and (``novelty``: the model's
    :class:`graft.artifacts.novelty.Novelty`) how many images each calls unfamiliar."""
    from graft._io.onnx import ort_session

    known = [(p, c) for p, c in rows if c in classes]
    images, kept = input_rows([p for p, _ in known], preprocessing, input_type)
    if not len(images):
        raise GraftError("--int8: none of the run's validation images could be read to check the int8 model")
    labels = np.array([classes.index(known[k][1]) for k in kept])
    answers = [run_in_pieces(ort_session(path), images, ["logits", "probabilities", "features"])
               for path in (float_path, int8_path)]
    (_, p_float, _), (_, p_int8, _) = answers
    check = {"images": int(len(labels)), "float_accuracy": float((p_float.argmax(1) == labels).mean()),
             "int8_accuracy": float((p_int8.argmax(1) == labels).mean()),
             "agreement": float((p_float.argmax(1) == p_int8.argmax(1)).mean()),
             "max_probability_diff": float(np.abs(p_float - p_int8).max())}
    if novelty is not None:  # int8 moves the features the novelty statistics were fitted on
        check["float_unfamiliar"], check["int8_unfamiliar"] = (
            int(novelty.judge(features, logits)[1].sum()) for logits, _, features in answers)
    return check
