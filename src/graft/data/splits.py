"""Splitting a scanned folder: a stratified train/validation split, K images per class, and the
class-imbalance warning, on :class:`~graft.data.records.ImageFolder` values
(:mod:`graft.data.folders` re-exports them)."""
from __future__ import annotations

import warnings
from dataclasses import replace

import numpy as np

from graft.data.records import ImageFolder, Record
from graft.errors import DataError


def stratified_split(
    folder: ImageFolder, val_fraction: float, seed: int = 0
) -> tuple[ImageFolder, ImageFolder]:
    """Split each class into train and validation parts, ``val_fraction`` of it to validation.

    Every class with at least two images lands on both sides; a single-image class stays in
    training (with a warning), since it cannot be both learned and validated.

    Parameters
    ----------
    folder : ImageFolder
    val_fraction : float
        In (0, 1); rounded per class.
    seed : int, default 0
        The shuffle's seed: the same seed gives the same split.

    Returns
    -------
    (ImageFolder, ImageFolder)
        Training and validation parts, each with the folder's classes.
    """
    if isinstance(val_fraction, bool) or not isinstance(val_fraction, (int, float, np.number)):
        raise DataError(f"val_fraction must be a number between 0 and 1, got {val_fraction!r}")
    if not 0.0 < float(val_fraction) < 1.0:  # also rejects NaN
        raise DataError(f"val_fraction must be strictly between 0 and 1, got {val_fraction}")

    rng = np.random.default_rng(seed)
    by_label: dict[int, list[Record]] = {}
    for record in sorted(folder.records, key=lambda r: (r.label, r.path)):
        by_label.setdefault(record.label, []).append(record)

    train: list[Record] = []
    val: list[Record] = []
    single: list[str] = []
    for label in sorted(by_label):
        members = by_label[label]
        n = len(members)
        if n == 1:
            train.extend(members)
            single.append(folder.classes[label])
            continue
        n_val = min(max(round(n * float(val_fraction)), 1), n - 1)
        order = rng.permutation(n)
        val.extend(members[i] for i in order[:n_val])
        train.extend(members[i] for i in order[n_val:])
    if single:
        names = ", ".join(f"'{name}'" for name in single)
        warnings.warn(
            f"class(es) {names} have only one image: kept in training, not validated",
            stacklevel=2,
        )

    def sort_key(r: Record):
        return (r.label, r.path)

    return (
        replace(folder, classes=list(folder.classes), records=sorted(train, key=sort_key)),
        replace(folder, classes=list(folder.classes), records=sorted(val, key=sort_key)),
    )


def take_per_class(folder: ImageFolder, per_class: int, seed: int = 0) -> ImageFolder:
    """``per_class`` images of every class, drawn with ``seed`` (what K labelled images buy)."""
    counts = folder.class_counts()
    short = {name: n for name, n in counts.items() if n < per_class}
    if short:
        name, n = min(short.items(), key=lambda item: item[1])
        raise DataError(f"--shots {per_class} is larger than class '{name}' ({n} training image(s)); "
                        f"the smallest class allows at most --shots {min(counts.values())}")
    rng = np.random.default_rng(seed)
    keep = []
    for label in range(len(folder.classes)):
        keep.extend(rng.permutation(np.flatnonzero(folder.labels == label))[:per_class])
    return folder.subset(np.sort(np.asarray(keep, dtype=np.int64)))


IMBALANCE_RATIO = 5.0  # a largest class more than this many times the smallest gets a warning


def warn_imbalance(train: ImageFolder) -> None:
    counts = {name: n for name, n in train.class_counts().items() if n > 0}
    if len(counts) < 2:
        return
    largest, smallest = max(counts, key=counts.get), min(counts, key=counts.get)
    if counts[largest] > IMBALANCE_RATIO * counts[smallest]:
        warnings.warn(
            f"class imbalance: '{largest}' has {counts[largest]} training images, '{smallest}' only "
            f"{counts[smallest]} ({counts[largest] / counts[smallest]:.0f}x); accuracy will favour the large "
            "class: consider --class-weight balanced (or --sampler balanced for finetune)", stacklevel=3)
