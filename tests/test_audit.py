"""graft audit on real images: a label put in the wrong class is found with the right
suggestion, a re-encoded copy in the validation folder is a leak paired with its original,
nothing is moved, and bad input is one line, exit 2."""
from __future__ import annotations

import csv
import shutil
import subprocess
import sys

import pytest
from PIL import Image

from conftest import SHARED_DATASETS, copy_subset, needs_shared
from graft.recipes.audit import audit


@pytest.fixture(scope="module")
def audited(tmp_path_factory):
    root = tmp_path_factory.mktemp("audit")
    train = copy_subset(SHARED_DATASETS / "hymenoptera" / "train", root / "train", 12)
    moved = sorted((train / "ants").iterdir())[0]
    shutil.move(moved, train / "bees" / moved.name)  # one ant labelled bee
    original = sorted(p for p in (train / "bees").iterdir() if p.name != moved.name)[0]
    (root / "val" / "bees").mkdir(parents=True)
    copy = root / "val" / "bees" / "copy.jpg"
    Image.open(original).convert("RGB").save(copy, quality=60)  # re-encoded: other bytes, same photo
    for name in ("ants", "bees"):
        (root / "val" / name).mkdir(exist_ok=True)
        for image in sorted((SHARED_DATASETS / "hymenoptera" / "val" / name).iterdir())[:3]:
            shutil.copy2(image, root / "val" / name)
    before = sorted(p.name for p in root.rglob("*"))
    # 24 images give blunter probabilities than a real folder: a looser threshold than the default 0.075
    result = audit(str(train), root / "run", val_dir=str(root / "val"), label_threshold=0.4, progress=False)
    with open(result.run_dir / "audit.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    return rows, result, moved.name, original, before, root


@needs_shared
def test_a_flipped_label_is_found_with_its_class(audited):
    rows, result, moved, *_ = audited
    labels = {r["path"].rsplit("/", 1)[-1]: r for r in rows if r["issue"] == "label"}
    assert moved in labels, rows
    assert labels[moved]["given"] == "bees" and labels[moved]["suggested"] == "ants"
    assert len(labels) <= 3  # a few at most among 26 images
    assert result.metrics["issues"]["label"] == len(labels)


@needs_shared
def test_a_reencoded_copy_in_validation_is_a_leak_paired_with_its_original(audited):
    rows, _, _, original, before, root = audited
    leaks = [r for r in rows if r["issue"] == "leak"]
    assert any(r["path"].endswith("copy.jpg") and r["other_path"] == str(original) for r in leaks) or \
        any(r["other_path"].endswith("copy.jpg") and r["path"] == str(original) for r in leaks), rows
    assert all(r["detail"].startswith("near") for r in leaks)
    from graft.reporting.html import write_html_report

    page = (root / "run" / "report.html").read_text()
    assert "data:image/jpeg;base64," in page and "leak" in page
    write_html_report(root / "run")  # `graft report RUN` draws the audit's own page again
    assert (root / "run" / "report.html").read_text() == page
    after = sorted(p.name for p in root.rglob("*") if "run" not in p.relative_to(root).parts)
    assert after == before  # nothing moved, changed or added among the images


def test_a_missing_folder_is_one_line_exit_2(tmp_path):
    done = subprocess.run([sys.executable, "-m", "graft", "audit", str(tmp_path / "nowhere"), "-o",
                           str(tmp_path / "run")], capture_output=True, text=True)
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0 and "nowhere" in done.stderr
    assert not (tmp_path / "run").exists()


@needs_shared
def test_fit_acts_on_the_audit_with_one_flag(audited, tmp_path):
    from graft.recipes.frozen import fit_frozen

    rows, result, moved, _, _, root = audited
    with pytest.warns(UserWarning, match="--exclude"):
        fitted = fit_frozen(str(root / "train"), tmp_path / "fit", val_dir=str(root / "val"),
                            exclude=str(result.run_dir / "audit.csv"), progress=False)
    with open(fitted.run_dir / "split.csv", newline="") as handle:
        used = {r["path"].rsplit("/", 1)[-1] for r in csv.DictReader(handle)}
    assert moved not in used and "copy.jpg" not in used
    assert fitted.metrics["n_train"] == 24 - sum(r["split"] == "train" for r in rows if r["issue"] != "imbalance")
    relabel = tmp_path / "relabel.csv"  # an edited decision: keep the image, with its right class
    relabel.write_text(f"path,relabel\n{root / 'train' / 'bees' / moved},ants\n")
    with pytest.warns(UserWarning, match="relabelled 1"):
        fitted = fit_frozen(str(root / "train"), tmp_path / "fit2", val_dir=str(root / "val"), exclude=str(relabel),
                            progress=False)
    with open(fitted.run_dir / "split.csv", newline="") as handle:
        assert any(r["path"].endswith(moved) for r in csv.DictReader(handle))
    relabel.write_text(f"path,relabel\n{root / 'train' / 'bees' / moved},wasps\n")
    with pytest.raises(Exception, match="wasps"):
        fit_frozen(str(root / "train"), tmp_path / "fit3", val_dir=str(root / "val"), exclude=str(relabel))
    assert not (tmp_path / "fit3").exists()


@needs_shared
def test_finetune_acts_on_the_audit_with_one_flag(audited, tmp_path):
    from click.testing import CliRunner

    from graft.cli import main

    _, result, moved, _, _, root = audited

    def finetune_split(out, decisions):
        ran = CliRunner().invoke(main, ["finetune", str(root / "train"), "--val", str(root / "val"), "--exclude",
                                        str(decisions), "--stages", "head:1", "--image-size", "64", "-o", str(out),
                                        "-q"])
        assert ran.exit_code == 0, ran.output
        with open(out / "split.csv", newline="") as handle:
            return {r["path"].rsplit("/", 1)[-1]: r["class"] for r in csv.DictReader(handle)}

    used = finetune_split(tmp_path / "ft", result.run_dir / "audit.csv")
    assert moved not in used and "copy.jpg" not in used and len(used) > 20
    relabel = tmp_path / "relabel.csv"  # an edited decision: keep the image, with its right class
    relabel.write_text(f"path,relabel\n{root / 'train' / 'bees' / moved},ants\n")
    assert finetune_split(tmp_path / "ft2", relabel)[moved] == "ants"
    relabel.write_text(f"path,relabel\n{root / 'train' / 'bees' / moved},wasps\n")
    bad = CliRunner().invoke(main, ["finetune", str(root / "train"), "--val", str(root / "val"), "--exclude",
                                    str(relabel), "-o", str(tmp_path / "ft3")])
    assert bad.exit_code == 2 and "wasps" in bad.output and not (tmp_path / "ft3").exists()


@needs_shared
def test_fit_warns_about_a_near_copy_in_validation(audited, tmp_path):
    from graft.recipes.frozen import fit_frozen

    root = audited[-1]
    with pytest.warns(UserWarning, match=r"copy\.jpg is a near copy of training image"):
        fit_frozen(str(root / "train"), tmp_path / "fit", val_dir=str(root / "val"), progress=False)


@needs_shared
def test_finetune_warns_about_a_near_copy_in_validation(audited, tmp_path):
    from graft.recipes.finetune import finetune

    root = audited[-1]
    with pytest.warns(UserWarning, match=r"copy\.jpg is a near copy of training image"):
        finetune(str(root / "train"), tmp_path / "ft", val_dir=str(root / "val"), stages="head:1", image_size=64,
                 progress=False)


def test_tiny_and_extreme_images_are_named_from_their_headers(tmp_path):
    from graft.curation.outliers import image_shape_issues, small_classes

    for name, size in (("tiny.png", (20, 30)), ("banner.jpg", (900, 100)), ("fine.jpg", (300, 200))):
        Image.new("RGB", size, (90, 120, 30)).save(tmp_path / name)
    (tmp_path / "broken.jpg").write_bytes(b"not an image")
    paths = [tmp_path / n for n in ("tiny.png", "banner.jpg", "fine.jpg", "broken.jpg")]
    assert image_shape_issues(paths) == [(0, "tiny", 20.0), (1, "extreme-aspect", 9.0)]
    assert small_classes({"a": 80, "b": 75, "c": 10}) == {"c": 0.133}
