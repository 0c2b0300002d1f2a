"""Scored folders (validation, test, ``graft evaluate``): what they may hold and what is said about
it. Issue 20: class names in two Unicode forms (#10), empty scored classes (#14), scored images
that were trained on (#5, #6), and output folders inside the data (-o)."""
from __future__ import annotations

import shutil
import unicodedata
from pathlib import Path

import pytest
from click.testing import CliRunner

from graft.cli import main
from graft.recipes.frozen import evaluate, fit_frozen

NFC, NFD = unicodedata.normalize("NFC", "Ämeisen"), unicodedata.normalize("NFD", "Ämeisen")


def _cli(*args):
    result = CliRunner().invoke(main, [str(a) for a in args])
    return result.exit_code, result.output


def _digits(source: Path, target: Path, names: dict[str, str], images: slice) -> Path:
    """``target/<name>/`` holding ``images`` of ``source/<digit>/`` for each {name: digit}."""
    for name, digit in names.items():
        (target / name).mkdir(parents=True, exist_ok=True)
        for image in sorted((source / digit).iterdir())[images]:
            shutil.copy2(image, target / name / image.name)
    return target


@pytest.fixture(scope="module")
def unicode_run(digits_dir, tmp_path_factory):
    """A fit on real digits whose class 'Ämeisen' is split over an NFC and an NFD folder."""
    root = tmp_path_factory.mktemp("unicode")
    train = _digits(digits_dir, root / "train", {"Bienen": "1", "Wespen": "2"}, slice(0, 8))
    _digits(digits_dir, train / NFC, {"": "0"}, slice(0, 4))
    _digits(digits_dir, train / NFD, {"": "0"}, slice(4, 8))
    assert len(list(train.iterdir())) == 4, "the file system merged the two forms: nothing to test"
    with pytest.warns(UserWarning, match="different Unicode forms"):
        result = fit_frozen(train, root / "run", image_size=64, progress=False)
    return train, result


def test_two_unicode_forms_train_one_class_and_evaluate_matches_either(unicode_run, digits_dir, tmp_path):
    train, result = unicode_run
    assert result.model.classes == ["Bienen", "Wespen", NFC]
    assert result.metrics["n_train"] + result.metrics["n_val"] == 24
    held_out = _digits(digits_dir, tmp_path / "eval", {NFD: "0", "Bienen": "1", "Wespen": "2"}, slice(8, 12))
    target, metrics = evaluate(result.run_dir, held_out, progress=False)
    assert metrics["n_val"] == 12 and metrics["accuracy"] > 0.5  # 'Ämeisen' (NFD) scored as the NFC class


def test_empty_class_in_a_scored_folder_warns_as_a_missing_one(unicode_run, digits_dir, tmp_path):
    """Issue 20 #14: fit --val and evaluate score a folder whose 'Wespen' folder is empty."""
    train, result = unicode_run
    val = _digits(digits_dir, tmp_path / "val", {NFC: "0", "Bienen": "1"}, slice(8, 12))
    (val / "Wespen").mkdir()
    with pytest.warns(UserWarning, match=f"'Wespen' have no evaluation images in {val}"):
        _, metrics = evaluate(result.run_dir, val, progress=False)
    assert metrics["n_val"] == 8
    with pytest.warns(UserWarning, match=f"'Wespen' have no validation images in {val}"):
        fitted = fit_frozen(train, tmp_path / "run", val_dir=val, image_size=64, progress=False)
    assert fitted.metrics["n_val"] == 8
    code, output = _cli("evaluate", result.run_dir, val, "-q")
    assert code == 0, output
