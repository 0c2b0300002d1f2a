"""graft export --format openvino (issue 29): the IR, run in OpenVINO's own CPU runtime on real
photos, gives ONNX Runtime's probabilities to 1e-4; graft's metadata travels in its rt_info; a
missing extra is one line naming it."""
from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from graft.cli import main

ov = pytest.importorskip("openvino", reason="the openvino extra is absent (pip install 'graft-vision[openvino]')")


def _cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture(scope="module")
def photo_run(hymenoptera_small, tmp_path_factory):
    train, val = hymenoptera_small
    run = tmp_path_factory.mktemp("openvino") / "run"
    result = _cli("fit", train, "--val", val, "--image-size", 96, "-o", run, "-q")
    assert result.exit_code == 0, result.output
    return run


@pytest.mark.parametrize("input_type", ["float", "uint8"])
def test_openvino_ir_agrees_with_onnx_runtime_on_real_photos(photo_run, hymenoptera_small, tmp_path, input_type):
    from graft.serve.onnx_predictor import OnnxPredictor

    xml = tmp_path / "ir" / "flowers.xml"
    onnx_file = tmp_path / "model.onnx"
    assert _cli("export", photo_run, "--input", input_type, "-o", onnx_file).exit_code == 0
    result = _cli("export", photo_run, "--format", "openvino", "--input", input_type, "-o", xml)
    assert result.exit_code == 0, result.output
    assert "OpenVINO (CPU, f32) vs ONNX Runtime on 8 of the run's images" in result.output
    assert xml.is_file() and xml.with_suffix(".bin").is_file()

    # the test's own comparison, on every validation photo, through OpenVINO's runtime
    onnx_model = OnnxPredictor.load(photo_run)
    paths = sorted(hymenoptera_small[1].glob("*/*"))
    if input_type == "uint8":  # decode as the uint8 export wants (the run's model.onnx is float)
        from graft.data.decode import load_image

        prep = onnx_model.preprocessing
        rows = np.stack([np.asarray(prep.resize_and_crop(load_image(p, min_side=prep.resize_size)), np.uint8)
                         for p in paths])
    else:
        rows = np.stack([onnx_model.decode(p) for p in paths])
    import onnxruntime as ort

    expected = ort.InferenceSession(str(onnx_file)).run(["probabilities"], {"images": rows})[0]
    model = ov.Core().read_model(str(xml))
    compiled = ov.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    got = compiled(rows)[compiled.output("probabilities")]
    assert got.shape == (12, 2) and np.abs(got - expected).max() <= 1e-4
    assert (got.argmax(1) == expected.argmax(1)).all()

    config = json.loads((photo_run / "model" / "graft.json").read_text())
    assert json.loads(model.get_rt_info(["graft.classes"]).astype(str)) == config["classes"] == ["ants", "bees"]
    assert json.loads(model.get_rt_info(["graft.input_recipe"]).astype(str)) == config["input_recipe"]
    assert json.loads(model.get_rt_info(["graft.input"]).astype(str))["type"] == input_type
    assert {o.get_any_name() for o in model.outputs} == {"logits", "probabilities", "features"}


def test_an_earlier_ir_is_replaced_and_a_foreign_file_is_not(photo_run, tmp_path):
    xml = tmp_path / "model.xml"
    assert _cli("export", photo_run, "--format", "openvino", "-o", xml).exit_code == 0
    assert _cli("export", photo_run, "--format", "openvino", "-o", xml).exit_code == 0
    foreign = tmp_path / "theirs.xml"
    foreign.write_text("<net/>")
    result = _cli("export", photo_run, "--format", "openvino", "-o", foreign)
    assert result.exit_code == 2 and "not an earlier graft export" in result.output
    assert foreign.read_text() == "<net/>" and not foreign.with_suffix(".bin").exists()


def test_a_missing_extra_is_one_line_naming_it():
    from graft.artifacts.exports import ExportFormat, check_available
    from graft.errors import GraftError

    fmt = ExportFormat("example", ".x", "openvino_format", "a format whose library is absent",
                       modules=("graft_absent_library",), extra="example")
    with pytest.raises(GraftError, match=r"^--format example needs the 'graft_absent_library' package: "
                                         r"pip install 'graft-vision\[example\]'$"):
        check_available(fmt)
