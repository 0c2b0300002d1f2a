"""`graft predict` on ONNX Runtime alone: same numbers as the torch model, no torch imported,
model.onnx exported once and again when the model changes; novelty on every row."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from graft.cli import main


@pytest.fixture(scope="module")
def digits_run(digits_dir, tmp_path_factory):
    from graft.recipes.frozen import fit_frozen

    return fit_frozen(digits_dir, tmp_path_factory.mktemp("fast") / "run", image_size=96, progress=False).run_dir


@pytest.fixture(scope="module")
def odd_images(tmp_path_factory):
    """Far from handwritten digits: a flat grey square and uniform noise."""
    root = tmp_path_factory.mktemp("odd")
    Image.new("RGB", (200, 150), (128, 128, 128)).save(root / "grey.png")
    noise = np.random.default_rng(0).integers(0, 256, (150, 200, 3), dtype=np.uint8)
    Image.fromarray(noise).save(root / "noise.png")
    return [root / "grey.png", root / "noise.png"]


def _predict_json(run, paths, *options):
    result = CliRunner().invoke(main, ["predict", str(run), *map(str, paths), "--json", "-k", "99", "-q", *options])
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in result.output.splitlines() if line.startswith("{")]


def _as_matrix(rows, classes):
    return np.array([[{t["class"]: t["probability"] for t in row["top"]}[c] for c in classes] for row in rows])


def test_fast_predict_equals_the_torch_model(digits_run, digits_dir):
    from graft.artifacts.model import GraftModel

    paths = sorted(digits_dir.rglob("*.png"))[::7]
    model = GraftModel.load(digits_run)
    assert not (digits_run / "model.onnx").exists()
    fast = _predict_json(digits_run, paths)
    assert (digits_run / "model.onnx").is_file()  # exported once, into the run
    for flip in (None, "flip"):
        features, expected = model.predict_paths(paths, progress=False, tta=flip)
        rows = fast if flip is None else _predict_json(digits_run, paths, "--tta", "flip")
        assert [row["path"] for row in rows] == features.paths
        got = _as_matrix(rows, model.classes)
        assert np.abs(got - expected).max() < 1e-4
        assert (got.argmax(1) == expected.argmax(1)).all()
    # the torch path answers the same, novelty included
    torch_rows = _predict_json(digits_run, paths, "--engine", "torch")
    assert np.abs(_as_matrix(torch_rows, model.classes) - _as_matrix(fast, model.classes)).max() < 1e-4
    assert [r["novelty"] for r in torch_rows] == pytest.approx([r["novelty"] for r in fast], abs=1e-2)


@pytest.mark.parametrize("dataset", ["hymenoptera"])
def test_fast_predict_on_real_photos(hymenoptera_small, tmp_path, dataset):
    from graft.artifacts.model import GraftModel
    from graft.recipes.frozen import fit_frozen

    train, val = hymenoptera_small
    run = fit_frozen(train, tmp_path / "run", val_dir=val, progress=False).run_dir
    paths = sorted(val.rglob("*.jpg"))
    features, expected = GraftModel.load(run).predict_paths(paths, progress=False)
    rows = _predict_json(run, paths)
    got = _as_matrix(rows, ["ants", "bees"])
    assert np.abs(got - expected).max() < 1e-4
    assert len(set(got.argmax(1))) == 2  # both classes predicted: not a constant answer


def test_predict_imports_neither_torch_nor_timm(digits_run, digits_dir):
    image = sorted(digits_dir.rglob("*.png"))[0]
    _predict_json(digits_run, [image])  # model.onnx is current after this
    code = ("import sys; from graft.cli import main\n"
            f"main(['predict', {str(digits_run)!r}, {str(image)!r}, '--json'], standalone_mode=False)\n"
            "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'timm', 'torchvision'))\n"
            "print('HEAVY', heavy)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "HEAVY []" in done.stdout, done.stdout
    assert json.loads(done.stdout.splitlines()[0])["top"]


def test_stale_export_is_replaced(digits_run, digits_dir):
    onnx_path = digits_run / "model.onnx"
    image = sorted(digits_dir.rglob("*.png"))[0]
    _predict_json(digits_run, [image])
    before = onnx_path.stat().st_mtime_ns
    _predict_json(digits_run, [image])
    assert onnx_path.stat().st_mtime_ns == before  # current: not exported again
    config = digits_run / "model" / "graft.json"
    config.write_text(config.read_text() + "\n")  # the model folder changed: the export is stale
    _predict_json(digits_run, [image])
    assert onnx_path.stat().st_mtime_ns != before


def test_novelty_flags_far_images_and_few_familiar_ones(digits_run, digits_dir, odd_images):
    rows = _predict_json(digits_run, odd_images)
    assert all(row["unfamiliar"] is True and row["novelty"] > 0 for row in rows)
    familiar = _predict_json(digits_run, sorted(digits_dir.rglob("*.png")))
    flagged = np.mean([row["unfamiliar"] for row in familiar])
    assert flagged <= 0.2, flagged  # the threshold comes from 24 validation digits: a coarse 5 %
    assert min(r["novelty"] for r in rows) > np.median([r["novelty"] for r in familiar])


def test_a_model_without_statistics_answers_null(digits_run, digits_dir, tmp_path):
    import shutil

    old = tmp_path / "old-run"
    shutil.copytree(digits_run / "model", old / "model")
    (old / "model" / "novelty.safetensors").unlink()  # as a model trained before novelty existed
    rows = _predict_json(old, sorted(digits_dir.rglob("*.png"))[:2])
    assert all(row["novelty"] is None and row["unfamiliar"] is None for row in rows)
    assert all(row["top"] for row in rows)


def test_fine_tuned_models_carry_novelty_too(digits_dir, odd_images, tmp_path):
    out = tmp_path / "ft"
    result = CliRunner().invoke(main, ["finetune", str(digits_dir), "-o", str(out), "--stages", "head:1",
                                       "--image-size", "64", "-q"])
    assert result.exit_code == 0, result.output
    assert (out / "model" / "novelty.safetensors").is_file()
    rows = _predict_json(out, [*odd_images, sorted(digits_dir.rglob("*.png"))[0]])
    assert all(isinstance(row["novelty"], float) for row in rows)
    assert rows[1]["unfamiliar"] is True  # uniform noise
