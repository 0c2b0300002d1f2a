"""Scored folders (validation, test, ``graft evaluate``): what they may hold and what is said about
it. Issue 20: class names in two Unicode forms (#10), empty scored classes (#14), scored images
that were trained on (#5, #6), and output folders inside the data (-o)."""
from __future__ import annotations

import shutil
import unicodedata
import warnings
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


@pytest.fixture(scope="module")
def three_digits(digits_dir, tmp_path_factory):
    """Real digits 0-2: 6 training, 3 validation and 3 test images per class, disjoint."""
    root = tmp_path_factory.mktemp("three")
    names = {"0": "0", "1": "1", "2": "2"}
    return tuple(_digits(digits_dir, root / part, names, images)
                 for part, images in (("train", slice(0, 6)), ("val", slice(6, 9)), ("test", slice(9, 12))))


def test_test_folder_may_not_be_validation_and_final_never_trains_on_it(three_digits, tmp_path):
    """Issue 20 #5: --test = --val is refused; with --final a test sharing validation images (by
    content) is refused, in fit and in finetune, before a run folder exists; without --final warned."""
    train, val, _ = three_digits
    copy = shutil.copytree(val, tmp_path / "copy-of-val")
    for test, final, message in ((val, False, f"test folder is the validation folder: {val}"),
                                 (copy, True, "--final trains on the validation images, and 9 of 9 test images are "
                                              "among them")):
        flags = ["--val", val, "--test", test, *(["--final"] if final else []), "--image-size", "64", "-q"]
        for command in ("fit", "finetune"):
            code, output = _cli(command, train, *flags, "-o", tmp_path / command)
            assert code == 2 and message in output and len(output.strip().splitlines()) == 1, output
            assert not (tmp_path / command).exists()
    with pytest.warns(UserWarning, match="9 of 9 test image\\(s\\) are also validation images, which chose the model"):
        result = fit_frozen(train, tmp_path / "run", val_dir=val, test_dir=copy, image_size=64, progress=False)
    assert result.metrics["test"]["n_test"] == 9


def test_scored_images_that_were_trained_on_are_warned_in_every_command(three_digits, tmp_path):
    """Issue 20 #6: a test or evaluate folder holding byte copies of training images is warned
    about (one line naming a pair), and evaluate knows what a --final model trained on."""
    train, val, test = three_digits
    leaky = shutil.copytree(test, tmp_path / "leaky")
    for i, image in enumerate(sorted((train / "1").iterdir())[:2]):
        shutil.copy2(image, leaky / "1" / f"copied-{i}.png")
    with pytest.warns(UserWarning, match=f"2 of 11 test image\\(s\\) are also training images \\(same content\\), "
                                         f"e.g. {leaky / '1'}/copied-0.png = {train / '1'}"):
        result = fit_frozen(train, tmp_path / "run", val_dir=val, test_dir=leaky, image_size=64, progress=False)
    code, output = _cli("evaluate", result.run_dir, leaky, "-q")
    assert code == 0 and "warning: 2 of 11 evaluation image(s) are also images the model was trained on" in output
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the model's own validation images: no warning without --final
        evaluate(result.run_dir, val, progress=False)
        evaluate(result.run_dir, test, progress=False)
    final = fit_frozen(train, tmp_path / "final", val_dir=val, final=True, image_size=64, progress=False)
    with pytest.warns(UserWarning, match="9 of 9 evaluation image\\(s\\) are also images the model was trained on"):
        evaluate(final.run_dir, val, progress=False)


def test_adapt_target_val_sharing_source_or_target_images_is_warned(three_digits, tmp_path):
    """Issue 20 #6 for adapt: --target-val images that are source (or adapted-to target) images."""
    from graft.errors import GraftError
    from graft.recipes.adapt import adapt

    blocker = tmp_path / "run"
    blocker.write_text("not a folder")  # -o is a file: refused when the run opens, after the plan's checks

    def said(target, target_val):
        refused = pytest.raises(GraftError, match="cannot create run folder")
        with warnings.catch_warnings(record=True) as caught, refused:
            warnings.simplefilter("always")
            adapt(train, blocker, target_dir=target, target_val_dir=target_val, stages="head:1", progress=False)
        return sorted(str(w.message).split(" (same content)")[0] for w in caught if "target-val" in str(w.message))

    train, val, test = three_digits
    assert said(test, val) == []  # disjoint: nothing to say
    assert said(val, train) == ["18 of 18 target-val image(s) are also labelled source images"]
    assert said(val, val) == ["9 of 9 target-val image(s) are also --target images (adapted to, unlabelled)"]
    empty = shutil.copytree(test, tmp_path / "empty")
    shutil.rmtree(empty / "2")
    (empty / "2").mkdir()  # issue 20 #14: an empty class folder in --target-val is a class without images
    assert said(val, empty) == [f"class(es) '2' have no target-val images in {empty}: their recall is not measured "
                                "and they do not count in the macro F1"]


def test_output_inside_or_holding_an_input_folder_is_refused(three_digits, tmp_path):
    """-o inside DATA, --val or --test (or holding one, or a run inside the evaluated folder)
    would read graft's own outputs as data next time, or remove the data with the run."""
    train, val, test = three_digits
    data = shutil.copytree(train, tmp_path / "data")
    outer = tmp_path / "outer"
    held = shutil.copytree(test, outer / "test")  # a folder named like a run's test/ output
    cases = [(["fit", data], data / "run", f"is inside the DATA folder {data}"),
             (["fit", data, "--val", val], val / "runs" / "r", f"is inside the --val folder {val}"),
             (["finetune", data, "--test", held], outer, f"holds the --test folder {held}"),
             (["multitask", f"a={data}", f"b={val}"], data, f"is the task a folder {data}"),
             (["extract", data], data / "features.npz", f"is inside the DATA folder {data}")]
    for args, out, message in cases:
        code, output = _cli(*args, "-o", out, "--image-size", "64", "-q")
        assert code == 2 and message in output and "choose another -o" in output, (args, output)
        assert len(output.strip().splitlines()) == 1, output
    assert sorted(p.name for p in data.iterdir()) == ["0", "1", "2"] and sorted(outer.iterdir()) == [held]
    run = fit_frozen(data, data.parent / "fit", image_size=64, progress=False).run_dir
    inside = shutil.copytree(run, test / "run")
    try:
        code, output = _cli("evaluate", inside, test, "-q")
    finally:
        shutil.rmtree(inside)
    assert code == 2 and f"the reports folder {inside / 'eval'} is inside the evaluated folder {test}" in output, output
