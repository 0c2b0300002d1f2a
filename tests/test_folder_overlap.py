"""Every folder a run trains on (transfer sets, adaptation targets, other tasks) checked against
every folder it scores, by content; every folder it trains on or scores each epoch recorded for a
resume; bad --unlabelled / --target folders said in one line. Real digits through the CLI."""
import json
import shutil
import unicodedata
from pathlib import Path

import pytest
from click.testing import CliRunner

from graft.cli import main


def _digits(root: Path, counts: dict, start: int = 0) -> Path:
    """Real scikit-learn digits as 32x32 RGB PNGs, ``root/<class>/<n>.png``; ``counts``:
    {class folder: (digit, how many)}, drawn from the ``start``-th image of that digit on."""
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    for folder, (digit, count) in counts.items():
        chosen = [i for i in range(len(digits.target)) if digits.target[i] == digit][start:start + count]
        (root / folder).mkdir(parents=True, exist_ok=True)
        for i in chosen:
            pixels = (digits.images[i] * (255 / 16)).astype("uint8")
            Image.fromarray(pixels).resize((32, 32)).convert("RGB").save(root / folder / f"{i}.png")
    return root


ZERO = unicodedata.normalize("NFC", "\u00e4")


@pytest.fixture(scope="module")
def labelled(tmp_path_factory):
    """Train (8 per class), val and test (4 per class) of 0s and 1s, disjoint; a teacher fit on
    them. The 0s are class "ä", whose training images lie in folders of both Unicode forms."""
    root = tmp_path_factory.mktemp("overlap")
    train = _digits(root / "train", {ZERO: (0, 4), "d1": (1, 8)})
    _digits(train, {unicodedata.normalize("NFD", ZERO): (0, 4)}, start=4)
    val = _digits(root / "val", {ZERO: (0, 4), "d1": (1, 4)}, start=8)
    test = _digits(root / "test", {ZERO: (0, 4), "d1": (1, 4)}, start=12)
    teacher = root / "teacher"
    result = CliRunner().invoke(main, ["fit", str(train), "--val", str(val), "--image-size", "64",
                                       "-o", str(teacher), "-q"])
    assert result.exit_code == 0, result.output
    return train, val, test, teacher


def _distill(labelled, run, *extra):
    train, val, _, teacher = labelled
    return CliRunner().invoke(main, ["distill", str(train), "--val", str(val), "--teacher", str(teacher),
                                     "--student", "tf_efficientnet_lite0", "--image-size", "64", "--stages",
                                     "head:1", "--batch-size", "64", "-o", str(run), "-q", *extra])


def test_a_transfer_set_of_scored_or_labelled_images_is_refused_before_anything_is_written(labelled, tmp_path):
    train, val, test, _ = labelled
    copy_of_test = shutil.copytree(test, tmp_path / "copy-of-test")
    for unlabelled, what, n, extra in ((val, "validation", 8, ()), (train, "labelled training", 16, ()),
                                       (copy_of_test, "test", 8, ("--test", str(test)))):
        run = tmp_path / "run"
        result = _distill(labelled, run, "--unlabelled", str(unlabelled), *extra)
        assert result.exit_code == 2, result.output
        lines = result.output.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: --unlabelled"), result.output
        assert f"all {n} of its images are also {what} images (same content)" in lines[0], lines[0]
        assert not run.exists()


def test_transfer_images_that_are_scored_or_labelled_are_left_out_and_listed(labelled, tmp_path):
    train, val, test, _ = labelled
    transfer = _digits(tmp_path / "photos", {"misc": (0, 3), "more": (1, 2)}, start=30)  # 5 new images
    shutil.copy(next((val / "d1").iterdir()), transfer / "misc" / "from-val.png")
    shutil.copy(next((test / ZERO).iterdir()), transfer / "from-test.png")
    shutil.copy(next((train / ZERO).iterdir()), transfer / "more" / "from-train.png")
    run = tmp_path / "run"
    result = _distill(labelled, run, "--unlabelled", str(transfer), "--test", str(test))
    assert result.exit_code == 0, result.output
    assert result.output.count("different Unicode forms") == 1, result.output
    for what in ("validation", "test", "labelled training"):
        assert f"1 of 8 --unlabelled image(s) are also {what} images" in result.output, result.output
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["n_unlabelled"] == 5  # before: 8, the student learnt the teacher's outputs on scored images
    left_out = {Path(s["path"]).name: s["reason"] for s in metrics["skipped"]}
    assert set(left_out) == {"from-val.png", "from-test.png", "from-train.png"}
    assert "also a validation image" in left_out["from-val.png"] and "left out" in left_out["from-test.png"]
    rows = [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()]
    assert [row["transfer_images"] for row in rows] == [5]


def test_unlabelled_naming_a_missing_folder_or_a_file_says_so(labelled, tmp_path):
    for path, said in ((tmp_path / "nowhere", "does not exist"),
                       (next((labelled[0] / ZERO).iterdir()), "is a file, not a folder")):
        result = _distill(labelled, tmp_path / "run", "--unlabelled", str(path))
        assert result.exit_code == 2 and said in result.output and "no readable" not in result.output, result.output
        assert len(result.output.strip().splitlines()) == 1 and not (tmp_path / "run").exists()


ADAPT = ["--backbone", "resnet10t", "--from-scratch", "--image-size", "32", "--batch-size", "16",
         "--val-split", "0.25", "--stages", "all:1", "-q"]


@pytest.fixture(scope="module")
def domains(tmp_path_factory):
    """A labelled source (6 per class of 0, 1, 2) and a target of other images of the same digits."""
    root = tmp_path_factory.mktemp("domains")
    source = _digits(root / "source", {"0": (0, 6), "1": (1, 6), "2": (2, 6)})
    target = _digits(root / "target", {"any": (0, 4), "more": (1, 4), "else": (2, 4)}, start=20)
    target_val = _digits(root / "target-val", {"0": (0, 4), "1": (1, 3), "2": (2, 3)}, start=40)
    return source, target, target_val


def _adapt(source, target, run, *extra):
    return CliRunner().invoke(main, ["adapt", "--source", str(source), "--target", str(target), "-o", str(run),
                                     *ADAPT, *extra])


def test_a_target_that_is_the_source_is_refused_in_one_line(domains, tmp_path):
    source, target, _ = domains
    copy = shutil.copytree(source, tmp_path / "copy")
    for same, said in ((source, "is the --source folder"), (copy, "holds no image of another domain")):
        result = _adapt(source, same, tmp_path / "run")
        assert result.exit_code == 2, result.output
        lines = result.output.strip().splitlines()
        assert len(lines) == 1 and said in lines[0] and not (tmp_path / "run").exists(), result.output
    for path, said in ((tmp_path / "nowhere", "does not exist"), (next((source / "0").iterdir()), "is a file")):
        result = _adapt(source, path, tmp_path / "run")
        assert result.exit_code == 2 and f"error: --target {path} {said}" in result.output, result.output
    from graft.data.folders import scan_folder, scan_unlabelled
    from graft.recipes.adapt import check_target_domain

    partial = shutil.copytree(target, tmp_path / "partial")  # one source image among the target's: a warning
    shutil.copy(next((source / "1").iterdir()), partial / "any" / "copied.png")
    with pytest.warns(UserWarning, match=r"1 of 13 --target images are labelled source images"):
        check_target_domain(scan_unlabelled(partial), {"--source": scan_folder(source)})


def test_a_target_too_small_for_the_proxy_a_distance_is_said_not_measured(domains, tmp_path):
    source, target, _ = domains
    source = shutil.copytree(source, tmp_path / "source")  # with a class in two Unicode forms: warned once
    _digits(source, {unicodedata.normalize("NFC", "\u00e4"): (3, 3)})
    _digits(source, {unicodedata.normalize("NFD", "\u00e4"): (3, 3)}, start=3)
    tiny = tmp_path / "tiny"
    tiny.mkdir()
    for image in sorted((target / "any").iterdir())[:2]:
        shutil.copy(image, tiny / image.name)
    run = tmp_path / "run"
    result = _adapt(source, tiny, run)
    assert result.exit_code == 0, result.output  # before: a ValueError traceback from the 3-fold CV
    assert "has only 2 image(s)" in result.output and result.output.count("different Unicode forms") == 1
    domain = json.loads((run / "domain.json").read_text())
    assert domain["proxy_a_distance_before"] is None and domain["proxy_a_distance_after"] is None
    assert domain["proxy_a_distance_not_measured"].startswith("not measured: too few target images (2;")
    assert (run / "metrics.json").exists() and (run / "model" / "graft.json").exists()


def test_resume_stops_when_the_target_val_folder_changed(domains, tmp_path):
    source, target, target_val = domains
    scored = shutil.copytree(target_val, tmp_path / "target-val")
    run = tmp_path / "run"
    result = _adapt(source, target, run, "--target-val", str(scored))
    assert result.exit_code == 0, result.output
    (run / "metrics.json").unlink()  # as if killed after its last epoch's checkpoint
    gone = sorted((scored / "1").iterdir())[0]
    gone.unlink()
    resumed = CliRunner().invoke(main, ["resume", str(run), "-q"])
    assert resumed.exit_code == 2, resumed.output
    lines = resumed.output.strip().splitlines()
    assert len(lines) == 1 and "data changed" in lines[0] and f"{scored}: 1 file(s) gone (1/{gone.name})" in lines[0]
    assert json.loads((run / "data.json").read_text())["target_val"]["classes"] == ["0", "1", "2"]


def test_multitask_warns_once_checks_tasks_against_each_other_and_resumes_only_on_the_same_val(tmp_path):
    nfc, nfd = unicodedata.normalize("NFC", "\u00e4"), unicodedata.normalize("NFD", "\u00e4")
    first = _digits(tmp_path / "first", {nfc: (0, 3), "y": (1, 6)})
    _digits(first, {nfd: (0, 3)}, start=3)  # the same class in the other Unicode form
    first_val = _digits(tmp_path / "first-val", {nfc: (0, 3), "y": (1, 3)}, start=10)
    second = _digits(tmp_path / "second", {"even": (2, 6), "odd": (3, 6)})
    shutil.copy(next((first_val / "y").iterdir()), second / "odd" / "seen.png")  # first's val = second's train
    run = tmp_path / "run"
    result = CliRunner().invoke(main, ["multitask", f"first={first}", f"second={second}", f"--val=first={first_val}",
                                       "--stages", "head:1", "--image-size", "32", "--batch-size", "8",
                                       "--augment", "none", "-o", str(run), "-q"])
    assert result.exit_code == 0, result.output
    assert result.output.count("different Unicode forms") == 1, result.output
    assert "1 of 6 validation image(s) of task first are training images of task second" in result.output
    (run / "metrics.json").unlink()
    gone = sorted((first_val / "y").iterdir())[-1]
    gone.unlink()
    resumed = CliRunner().invoke(main, ["resume", str(run), "-q"])
    assert resumed.exit_code == 2 and f"{first_val}: 1 file(s) gone (y/{gone.name})" in resumed.output, \
        resumed.output
