"""Shared fixtures: a private feature cache, real datasets, and small real subsets."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

SHARED_DATASETS = Path(__file__).resolve().parents[2] / "shared" / "datasets"
needs_shared = pytest.mark.skipif(
    not (SHARED_DATASETS / "hymenoptera").is_dir(),
    reason=f"real datasets not found at {SHARED_DATASETS} (CI has them beside the clone)",
)


@pytest.fixture(scope="session", autouse=True)
def private_cache(tmp_path_factory):
    """Every test session gets its own feature/ONNX cache: no state leaks between runs."""
    path = tmp_path_factory.mktemp("graft-cache")
    old = os.environ.get("GRAFT_CACHE_DIR")
    os.environ["GRAFT_CACHE_DIR"] = str(path)
    os.environ["GRAFT_NO_PROGRESS"] = "1"
    yield path
    if old is None:
        os.environ.pop("GRAFT_CACHE_DIR", None)
    else:
        os.environ["GRAFT_CACHE_DIR"] = old


@pytest.fixture(scope="session")
def lite0():
    from graft import create_backbone

    return create_backbone("tf_efficientnet_lite0")


@pytest.fixture(scope="session")
def digits_dir(tmp_path_factory) -> Path:
    """scikit-learn's bundled real handwritten digits, 12 per class, as PNG class folders."""
    from graft.recipes.demo import write_digits_dataset

    return write_digits_dataset(tmp_path_factory.mktemp("digits"), per_class=12)


def copy_subset(source: Path, target: Path, per_class: int) -> Path:
    for class_dir in sorted(p for p in source.iterdir() if p.is_dir()):
        (target / class_dir.name).mkdir(parents=True, exist_ok=True)
        for image in sorted(class_dir.iterdir())[:per_class]:
            shutil.copy2(image, target / class_dir.name / image.name)
    return target


@pytest.fixture(scope="session")
def parity_dir(digits_dir, tmp_path_factory) -> Path:
    """A second task (multi-task tests) on real images: the same handwritten digits labelled even or odd."""
    root = tmp_path_factory.mktemp("parity")
    for path in sorted(digits_dir.glob("*/*.png")):
        out = root / ("even" if int(path.parent.name) % 2 == 0 else "odd") / f"{path.parent.name}-{path.name}"
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, out)
    return root


@pytest.fixture(scope="session")
def hymenoptera_small(tmp_path_factory) -> tuple[Path, Path]:
    """A real subset: 10 train and 6 val images per class of hymenoptera."""
    if not (SHARED_DATASETS / "hymenoptera").is_dir():
        pytest.skip(f"real datasets not found at {SHARED_DATASETS}")
    root = tmp_path_factory.mktemp("hymenoptera")
    train = copy_subset(SHARED_DATASETS / "hymenoptera" / "train", root / "train", 10)
    val = copy_subset(SHARED_DATASETS / "hymenoptera" / "val", root / "val", 6)
    return train, val
