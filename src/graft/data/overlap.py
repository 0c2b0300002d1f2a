"""Files of the same content where they should not be: in two classes, or on both sides of a
train/validation split (by content: byte-identical copies, symlinks, hard links)."""
from __future__ import annotations

import os
import warnings
from pathlib import Path


def duplicate_groups(paths: list[Path]) -> list[list[Path]]:
    """Groups (two or more) of files with the same content: the same file reached twice
    (symlinks, hard links) or byte-identical copies. Only files whose sizes collide are read."""
    import hashlib

    by_size: dict[int, list[Path]] = {}
    for path in paths:
        try:
            by_size.setdefault(os.stat(path).st_size, []).append(path)
        except OSError:
            continue  # reported when it fails to decode
    groups: dict[str, list[Path]] = {}
    for size, same_size in by_size.items():
        if len(same_size) < 2 or size == 0:
            continue
        for path in same_size:
            try:
                digest = hashlib.blake2b()
                with open(path, "rb") as handle:
                    for chunk in iter(lambda: handle.read(1 << 20), b""):
                        digest.update(chunk)
            except OSError:
                continue
            groups.setdefault(f"{size}:{digest.hexdigest()}", []).append(path)
    return [group for group in groups.values() if len(group) > 1]


def warn_duplicates(train, val, split: bool) -> None:
    """Warn (one line per kind, with an example) about files of the same content in two classes,
    in both training and validation, or twice in one class when a split may separate them."""
    source = {record.path: ("train", train.classes[record.label]) for record in train.records}
    if val is not None:
        source.update({record.path: ("val", val.classes[record.label]) for record in val.records})
    cross_class, train_val, within = [], [], []
    for group in duplicate_groups(list(source)):
        where = [source[p] for p in group]
        if len({label for _, label in where}) > 1:
            cross_class.append(group)
        elif len({part for part, _ in where}) > 1:
            train_val.append(group)
        elif split:
            within.append(group)

    def example(groups):
        return " = ".join(str(p) for p in groups[0][:2])

    if cross_class:
        warnings.warn(f"{len(cross_class)} file(s) are in more than one class folder (same content), e.g. "
                      f"{example(cross_class)}: they teach contradicting labels", stacklevel=3)
    if train_val:
        warnings.warn(f"{len(train_val)} validation image(s) are also in the training folder (same content), e.g. "
                      f"{example(train_val)}: validation accuracy will be optimistic", stacklevel=3)
    if within:
        warnings.warn(f"{len(within)} image(s) have identical copies in the same class, e.g. {example(within)}: "
                      "a validation split can put one copy on each side", stacklevel=3)
