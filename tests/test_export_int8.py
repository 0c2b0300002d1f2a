"""graft export --int8 (issue 29): ONNX Runtime static int8 calibrated on the run's own training
images, the validation accuracy change reported, a loss over --int8-max-loss refused with
nothing written; the int8 file is RUN/model.onnx, which graft predict and graft serve run."""
from __future__ import annotations

import dataclasses
import json

import click
import numpy as np
import onnx
import pytest
from click.testing import CliRunner

from graft.cli import main
from graft.recipes.settings import EXPORT_FORMATS, ExportConfig


def _cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture(scope="module")
def photo_run(hymenoptera_small, tmp_path_factory):
    train, val = hymenoptera_small
    run = tmp_path_factory.mktemp("int8") / "run"
    result = _cli("fit", train, "--val", val, "--image-size", 96, "-o", run, "-q")
    assert result.exit_code == 0, result.output
    return run


def _metadata(path) -> dict:
    return {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}


def test_int8_export_reports_accuracy_and_predict_and_serve_run_it(photo_run, hymenoptera_small):
    from graft.serve.onnx_predictor import OnnxPredictor
    from graft.serve.runner import load_predictor

    floats = OnnxPredictor.load(photo_run).predict_paths(sorted(hymenoptera_small[1].glob("*/*"))).probabilities
    result = _cli("export", photo_run, "--int8", "--calibration-images", 8)
    assert result.exit_code == 0, result.output
    assert "int8 vs float on 12 validation images: accuracy" in result.output, result.output
    model = onnx.load(str(photo_run / "model.onnx"))
    ops = {node.op_type for node in model.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops  # quantised, not the float file again
    meta = _metadata(photo_run / "model.onnx")
    quantisation = json.loads(meta["graft.quantization"])
    assert quantisation["calibration_images"] == 8 and quantisation["images"] == 12
    recipe = json.loads((photo_run / "model" / "graft.json").read_text())["input_recipe"]
    assert json.loads(meta["graft.input_recipe"]) == recipe

    # predict and serve take the int8 file as the run's current export
    predicted = _cli("predict", photo_run, hymenoptera_small[1], "--json", "-q")
    assert predicted.exit_code == 0, predicted.output
    served = load_predictor(photo_run)
    assert "graft.quantization" in served.session.get_modelmeta().custom_metadata_map
    int8 = served.predict_paths(sorted(hymenoptera_small[1].glob("*/*"))).probabilities
    assert int8.shape == floats.shape and not np.allclose(int8, floats, atol=1e-6)
    assert (int8.argmax(1) == floats.argmax(1)).mean() >= 0.75

    # the float export comes back with a plain export
    assert _cli("export", photo_run).exit_code == 0
    assert "graft.quantization" not in _metadata(photo_run / "model.onnx")


def test_int8_that_loses_too_much_is_refused_and_nothing_is_written(digits_dir, tmp_path):
    """scikit-learn's 8x8 digits blown up to 64 px: int8 calibrated on 8 of them loses most of
    the accuracy (its activations' ranges are far off), so the export refuses in one line."""
    run = tmp_path / "digits"
    assert _cli("fit", digits_dir, "--val-split", "0.25", "--image-size", 64, "-o", run, "-q").exit_code == 0
    before = sorted(p.name for p in run.iterdir())
    result = _cli("export", run, "--int8", "--calibration-images", 8)
    assert result.exit_code == 2
    line = result.output.strip().splitlines()[-1]
    assert line.startswith("error: int8 vs float on 30 validation images") and "nothing written" in line
    assert "--int8-max-loss 1 points" in line
    assert sorted(p.name for p in run.iterdir()) == before  # no model.onnx, no temporary file


def test_int8_is_refused_where_it_cannot_be_checked(photo_run, tmp_path):
    bare = tmp_path / "bare"
    bare.mkdir()
    for name in ("graft.json", "weights.safetensors"):
        (bare / name).write_bytes((photo_run / "model" / name).read_bytes())
    result = _cli("export", bare, "--int8")
    assert result.exit_code == 2 and "split.csv" in result.output and not (tmp_path / "bare.onnx").exists()
    result = _cli("export", photo_run, "--int8", "--format", "openvino")
    assert result.exit_code == 2 and "--int8 is a setting of --format onnx" in result.output


def test_the_export_command_is_generated_from_its_config():
    command = main.get_command(click.Context(main), "export")
    fields = {f.name: f for f in dataclasses.fields(ExportConfig)}
    shown = {p.name: p for p in command.params}
    assert set(fields) == set(shown)
    for name, param in shown.items():
        if isinstance(param, click.Option):
            default = bool(param.default) if param.is_flag else param.default
            assert default == fields[name].default, name
    from graft.artifacts.exports import FORMATS

    assert tuple(FORMATS) == EXPORT_FORMATS
