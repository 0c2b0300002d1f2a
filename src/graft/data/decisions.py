"""Acting on an audit with one flag: ``graft fit DATA --exclude RUN/audit.csv``.

The file is ``graft audit``'s audit.csv, or any CSV with a ``path`` column (an edited copy).
Every row's image is left out of training and validation, except rows whose ``relabel``
column names a class: that image stays, with that class. Each audit row names the *second*
image of a copy or leak (``path``; the first is ``other_path``), so excluding every row keeps
one image of each pair. Rows naming a folder (``imbalance``) or no image of the data are not
images to leave out: they are counted, not applied. Nothing on disk changes.
"""
from __future__ import annotations

import csv
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from graft.data.folders import ImageFolder, Record
from graft.errors import DataError


@dataclass
class Decisions:
    """``exclude``: real paths to leave out; ``relabel``: real path -> class name."""

    source: Path
    exclude: set[str] = field(default_factory=set)
    relabel: dict[str, str] = field(default_factory=dict)


def _real(path: str) -> str:
    return os.path.realpath(os.path.expanduser(path))


def read_decisions(path) -> Decisions:
    """The decisions of a CSV with a ``path`` column (and optionally ``relabel``); DataError
    (one line, naming the file) when it cannot be read or has no ``path`` column."""
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8-sig", errors="surrogateescape") as handle:  # Excel: BOM
            reader = csv.DictReader(handle)
            if not reader.fieldnames or "path" not in reader.fieldnames:
                raise DataError(f"--exclude {path}: no 'path' column (expected graft audit's audit.csv or a CSV "
                                "with path[,relabel])")
            rows = list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"--exclude {path}: cannot read it ({getattr(exc, 'strerror', None) or exc})") from None
    decisions = Decisions(path)
    for row in rows:
        if not row.get("path") or row.get("issue") == "imbalance":
            continue
        target = (row.get("relabel") or "").strip()
        if target:
            decisions.relabel[_real(row["path"])] = target
        else:
            decisions.exclude.add(_real(row["path"]))
    return decisions


def apply_decisions(folder: ImageFolder, decisions: Decisions) -> tuple[ImageFolder, dict]:
    """``folder`` without the excluded images and with the relabelled ones moved; returns it
    and ``{"excluded": n, "relabelled": n}``. A ``relabel`` naming no class of the folder is a
    DataError naming the file, the image and the classes."""
    records, excluded, relabelled = [], 0, 0
    for record in folder.records:
        real = _real(str(record.path))
        if real in decisions.exclude:
            excluded += 1
            continue
        if real in decisions.relabel:
            name = decisions.relabel[real]
            if name not in folder.classes:
                raise DataError(f"--exclude {decisions.source}: relabel {name!r} for {record.path} is not a class of "
                                f"{folder.root} ({', '.join(folder.classes)})")
            record, relabelled = Record(record.path, folder.classes.index(name)), relabelled + 1
        records.append(record)
    return ImageFolder(folder.root, list(folder.classes), records), {"excluded": excluded, "relabelled": relabelled}


def apply_exclude(path, train: ImageFolder, val: ImageFolder | None) -> tuple[ImageFolder, ImageFolder | None]:
    """``train`` and ``val`` with the decisions of the file at ``path`` applied (``--exclude``):
    listed images left out, relabelled ones moved; one warning counts them (and the rows that
    name no image of these folders). DataError when the file is unreadable, names a class the
    data lacks, or leaves no validation image. ``val`` may be None (nothing held out)."""
    decisions = read_decisions(path)
    train, in_train = apply_decisions(train, decisions)
    val, in_val = apply_decisions(val, decisions) if val is not None else (val, {"excluded": 0, "relabelled": 0})
    if val is not None and not len(val):
        raise DataError(f"--exclude {path} leaves no validation image: give another --val, or edit the file")
    excluded, relabelled = in_train["excluded"] + in_val["excluded"], in_train["relabelled"] + in_val["relabelled"]
    unused = len(decisions.exclude) + len(decisions.relabel) - excluded - relabelled
    warnings.warn(f"--exclude {path}: left out {excluded} image(s), relabelled {relabelled}; {unused} of its rows "
                  "name no image of these folders", stacklevel=3)
    return train, val
