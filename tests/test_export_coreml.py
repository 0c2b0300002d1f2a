"""graft export --format coreml (issue 29): coremltools converts on Linux, Core ML predicts only
on Apple's systems, so here: the converted network agrees with ONNX Runtime on real photos, and
the saved model is a classifier of the run's classes with an RGB image input, the four outputs
and graft's metadata (classes, the input recipe of graft.json)."""
from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from graft.cli import main

ct = pytest.importorskip("coremltools", reason="the coreml extra is not installed (pip install 'graft-vision[coreml]')")


def _cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture(scope="module")
def exported(hymenoptera_small, tmp_path_factory):
    train, val = hymenoptera_small
    run = tmp_path_factory.mktemp("coreml") / "run"
    assert _cli("fit", train, "--val", val, "--image-size", 96, "-o", run, "-q").exit_code == 0
    result = _cli("export", run, "--format", "coreml")
    assert result.exit_code == 0, result.output
    return run, result.output


def _class_labels(spec) -> list[str]:
    """The labels of the ML Program's classify op (where Core ML keeps a classifier's classes)."""
    function = spec.mlProgram.functions["main"]
    block = function.block_specializations[function.opset]
    classify = next(op for op in block.operations if op.type == "classify")
    values = classify.inputs["classes"].arguments[0].value.immediateValue.list.values
    return [v.immediateValue.tensor.strings.values[0] for v in values]


def test_coreml_classifier_has_the_classes_the_image_input_and_the_recipe(exported):
    run, output = exported
    assert "vs ONNX Runtime on 8 of the run's images: max |diff| of probabilities" in output
    package = run / "model.mlpackage"
    spec = ct.utils.load_spec(str(package))
    config = json.loads((run / "model" / "graft.json").read_text())
    assert spec.WhichOneof("Type") == "mlProgram"
    assert _class_labels(spec) == config["classes"] == ["ants", "bees"]

    (image,) = spec.description.input
    assert image.name == "image" and image.type.WhichOneof("Type") == "imageType"
    assert (image.type.imageType.width, image.type.imageType.height) == (96, 96)
    assert ct.proto.FeatureTypes_pb2.ImageFeatureType.ColorSpace.Name(image.type.imageType.colorSpace) == "RGB"
    outputs = {o.name: o.type.WhichOneof("Type") for o in spec.description.output}
    assert outputs == {"classLabel": "stringType", "probabilities": "dictionaryType", "logits": "multiArrayType",
                       "features": "multiArrayType"}
    assert spec.description.predictedFeatureName == "classLabel"
    assert spec.description.predictedProbabilitiesName == "probabilities"

    meta = spec.description.metadata.userDefined
    assert json.loads(meta["graft.classes"]) == config["classes"]
    assert json.loads(meta["graft.input_recipe"]) == config["input_recipe"]
    assert json.loads(meta["graft.preprocessing"]) == config["preprocessing"]
    assert json.loads(meta["graft.input"])["type"] == "image"


def test_an_earlier_package_is_replaced_and_options_it_cannot_take_are_refused(exported, tmp_path):
    run, _ = exported
    again = _cli("export", run, "--format", "coreml")
    assert again.exit_code == 0, again.output
    assert _cli("export", run, "--format", "coreml", "--input", "uint8").exit_code == 2
    foreign = tmp_path / "theirs.mlpackage"
    foreign.mkdir()
    result = _cli("export", run, "--format", "coreml", "-o", foreign)
    assert result.exit_code == 2 and "not an earlier graft export" in result.output and not any(foreign.iterdir())
