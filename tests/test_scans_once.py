"""Issue 26: each data folder is scanned once per command. A run plan is built once from the
Config (folders scanned and split, the network built, the method chosen) and then executed;
the run folder's data.json, the test score and a resume read the folders as that plan scanned
them. Counted with graft.data.counting.count_scans on tiny real data (scikit-learn's digits,
a ResNet-10-T from random weights at 32 px, one epoch)."""
from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import pytest

from graft.data.counting import count_scans
from graft.recipes.adapt import adapt
from graft.recipes.finetune import finetune
from graft.recipes.frozen import fit_frozen
from graft.recipes.multitask import multitask
from graft.recipes.resume import resume

TINY = {"backbone": "resnet10t", "pretrained": False, "image_size": 32, "batch_size": 8, "stages": "all:1"}


@pytest.fixture(scope="module")
def folders(digits_dir, tmp_path_factory) -> dict[str, Path]:
    """Digits 0-2 split by file into train (6 per class), val, test and target-val (2 each),
    and an unlabelled target of other digits' images in one flat folder."""
    root = tmp_path_factory.mktemp("scans")
    parts = {"train": (0, 6), "val": (6, 8), "test": (8, 10), "target_val": (10, 12)}
    for label in ("0", "1", "2"):
        images = sorted((digits_dir / label).iterdir())
        for part, (start, stop) in parts.items():
            (root / part / label).mkdir(parents=True, exist_ok=True)
            for image in images[start:stop]:
                shutil.copy2(image, root / part / label / image.name)
        (root / "target").mkdir(exist_ok=True)
        for image in sorted((digits_dir / str(int(label) + 5)).iterdir())[:4]:
            shutil.copy2(image, root / "target" / f"{label}-{image.name}")
    return {part: root / part for part in (*parts, "target")}


def _scans(run) -> dict[str, int]:
    with warnings.catch_warnings(), count_scans() as scans:
        warnings.simplefilter("ignore")
        run()
    return {path.name: n for path, n in scans.items()}


def test_fit_scans_its_training_and_validation_folders_once(folders, tmp_path):
    scans = _scans(lambda: fit_frozen(str(folders["train"]), tmp_path / "fit", val_dir=str(folders["val"]),
                                      image_size=64, progress=False))
    assert scans == {"train": 1, "val": 1}


def test_finetune_and_its_resume_scan_each_folder_once(folders, tmp_path):
    run = tmp_path / "ft"
    scans = _scans(lambda: finetune(str(folders["train"]), run, val_dir=str(folders["val"]),
                                    test_dir=str(folders["test"]), progress=False, **TINY))
    # before the run plan: train 3 times (check, data.json, training), the test folder twice
    assert scans == {"train": 1, "val": 1, "test": 1}
    assert (run / "test" / "metrics.json").is_file() and (run / "data.json").is_file()
    (run / "metrics.json").unlink()  # as if killed after its last checkpoint
    assert _scans(lambda: resume(run, progress=False)) == {"train": 1, "val": 1, "test": 1}
    assert (run / "metrics.json").is_file()


def test_adapt_scans_source_target_and_target_val_once(folders, tmp_path):
    scans = _scans(lambda: adapt(str(folders["train"]), tmp_path / "adapt", target_dir=str(folders["target"]),
                                 target_val_dir=str(folders["target_val"]), progress=False, **TINY))
    # before: the source up to five times, the target and target-val three times each
    assert scans == {"train": 1, "target": 1, "target_val": 1}


def test_multitask_scans_each_task_folder_and_its_val_once(folders, tmp_path):
    tasks = {"digits": str(folders["train"]), "again": str(folders["target_val"])}
    scans = _scans(lambda: multitask(tasks, tmp_path / "mt", val_dirs={"digits": str(folders["val"])}, progress=False,
                                     image_size=32, batch_size=8, stages="head:1"))
    assert scans == {"train": 1, "val": 1, "target_val": 1}
