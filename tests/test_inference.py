"""One inference path (issue 26): `graft predict`, `graft evaluate` and `graft serve` answer through
graft.inference.Predictor, so predict and evaluate give the same probabilities for each image,
and decoding bytes gives what decoding the file gives."""
from __future__ import annotations

import csv
import shutil

import numpy as np
import pytest
from click.testing import CliRunner

from conftest import SHARED_DATASETS, copy_subset, needs_shared
from graft.cli import main


def _cli(*args):
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result


def _predicted(run, data, *options) -> dict:
    """`graft predict RUN DATA --csv`: path -> {class: probability as printed}."""
    rows = csv.DictReader(_cli("predict", run, data, "--csv", "-k", "99", "-q", *options).stdout.splitlines())
    table: dict = {}
    for row in rows:
        table.setdefault(row["path"], {})[row["class"]] = row["probability"]
    return table


def _evaluated(run, data, *options) -> dict:
    """`graft evaluate RUN DATA`: path -> (true class, its probability as written in predictions.csv)."""
    _cli("evaluate", run, data, "-q", *options)
    with open(run / "eval" / data.name / "predictions.csv", newline="") as handle:
        return {row["path"]: (row["true_class"], row["true_class_probability"]) for row in csv.DictReader(handle)}


def _assert_same(predicted: dict, evaluated: dict) -> None:
    assert sorted(predicted) == sorted(evaluated) and evaluated
    differ = [(path, truth, p, predicted[path][truth]) for path, (truth, p) in evaluated.items()
              if predicted[path][truth] != p]
    assert not differ, f"{len(differ)} of {len(evaluated)} images differ, e.g. {differ[:3]}"


@pytest.fixture(scope="module")
def digits_run(digits_dir, tmp_path_factory):
    run = tmp_path_factory.mktemp("digits") / "run"
    _cli("fit", digits_dir, "--image-size", 64, "-o", run, "-q")
    return run


@pytest.fixture(scope="module")
def photo_run(tmp_path_factory):
    """A fit on a few real photos, and a held-out folder of real photos (both classes)."""
    if not (SHARED_DATASETS / "hymenoptera").is_dir():
        pytest.skip(f"real datasets not found at {SHARED_DATASETS}")
    root = tmp_path_factory.mktemp("photos")
    train = copy_subset(SHARED_DATASETS / "hymenoptera" / "train", root / "train", 8)
    run = root / "run"
    _cli("fit", train, "-o", run, "-q")
    return run


def test_predict_and_evaluate_agree_on_every_digit(digits_run, digits_dir, tmp_path):
    """Always runs (scikit-learn's real handwritten digits): the probability `graft evaluate`
    writes for each image is the one `graft predict` prints, on ONNX Runtime and on torch."""
    held_out = shutil.copytree(digits_dir, tmp_path / "held-out")
    for engine in ("onnx", "torch"):
        _assert_same(_predicted(digits_run, held_out, "--engine", engine),
                     _evaluated(digits_run, held_out, "--engine", engine))


@needs_shared
def test_predict_and_evaluate_agree_on_hymenoptera_val(photo_run):
    """Issue 26's check: every probability of hymenoptera/val (153 photos) to 1e-6. Before the one
    path, evaluate ran the extractor's feature graph and a torch head: 4 of 306 printed
    probabilities differed from predict's in the 6th decimal (max |diff| 1.2e-7)."""
    val = SHARED_DATASETS / "hymenoptera" / "val"
    predicted, evaluated = _predicted(photo_run, val), _evaluated(photo_run, val)
    assert len(evaluated) == 153
    _assert_same(predicted, evaluated)
    from graft.inference import open_predictor
    from graft.serve.predict import PredictOptions, predict_files

    paths = sorted(val.rglob("*.jpg"))
    through_predict = predict_files(photo_run, paths, PredictOptions()).batch.probabilities
    direct = open_predictor(photo_run).predict_paths(paths).probabilities
    assert np.abs(through_predict - direct).max() <= 1e-6
    # a real classifier, not a constant answer: both classes are predicted
    assert len(set(through_predict.argmax(1))) == 2


def test_bytes_decode_as_the_file_and_engines_agree(digits_run, digits_dir):
    """Serve decodes uploads from memory: bytes give the file's row exactly; the torch engine
    answers what ONNX Runtime answers (to float rounding), novelty included."""
    from graft.inference import Predictor

    run = digits_run
    paths = sorted(digits_dir.rglob("*.png"))[::5]
    onnx, torch = Predictor.load(run), Predictor.load(run, engine="torch")
    assert (onnx.engine, torch.engine) == ("onnx", "torch")
    for path in paths[:4]:
        assert np.array_equal(onnx.decode(path.read_bytes()), onnx.decode(path))
    a, b = onnx.predict_paths(paths, batch_size=4), torch.predict_paths(paths, batch_size=4)
    assert a.paths == b.paths == [str(p) for p in paths]
    assert np.abs(a.probabilities - b.probabilities).max() < 1e-4
    assert np.abs(a.novelty - b.novelty).max() < 1e-2


def test_onnx_graphs_are_cached_in_one_folder(digits_run, digits_dir, tmp_path, monkeypatch):
    """One cache location: what predicting keeps (the optimised graph of model.onnx) lies under
    $GRAFT_CACHE_DIR/onnx/, beside the feature networks' exports, and nowhere else."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("GRAFT_CACHE_DIR", str(cache))
    image = sorted(digits_dir.rglob("*.png"))[0]
    first = _cli("predict", digits_run, image, "--json", "-q").stdout
    assert (digits_run / "model.onnx").is_file()
    kept = [p.relative_to(cache) for p in cache.rglob("*") if p.is_file()]
    assert kept and all(p.parts[:2] == ("onnx", "optimised") for p in kept), kept
    assert _cli("predict", digits_run, image, "--json", "-q").stdout == first  # read back: the same answer
