"""The run's own images for the exports: int8 calibration (training rows of ``split.csv``),
accuracy before and after (validation rows), and real-image checks of converted models."""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from graft.data.decode import load_image
from graft.data.preprocess import Preprocessing
from graft.errors import ImageDecodeError


def split_rows(run_dir: Path | None, subset: str) -> list[tuple[str, str]]:
    """``(path, class)`` of ``run_dir/split.csv``'s rows of ``subset`` ("train" or "val"), in file
    order; empty when the run has no split.csv (a bare model folder) or none of that subset."""
    if run_dir is None or not (Path(run_dir) / "split.csv").is_file():
        return []
    # a file name that is not UTF-8 was written as its own bytes (surrogateescape), read it so
    with open(Path(run_dir) / "split.csv", newline="", errors="surrogateescape") as handle:
        return [(row["path"], row["class"]) for row in csv.DictReader(handle) if row.get("subset") == subset]


def spread(rows: list[tuple[str, str]], n: int) -> list[tuple[str, str]]:
    """Up to ``n`` rows taken class by class in turn (the first of each class, then the second,
    ...), so a small calibration set still sees every class."""
    by_class: dict[str, list] = {}
    for row in rows:
        by_class.setdefault(row[1], []).append(row)
    picked, depth = [], 0
    while len(picked) < min(n, len(rows)):
        for members in by_class.values():
            if depth < len(members) and len(picked) < n:
                picked.append(members[depth])
        depth += 1
    return picked


def input_rows(paths, preprocessing: dict, input_type: str) -> tuple[np.ndarray, list[int]]:
    """The network inputs of image files, decoded as ``graft predict`` decodes them: float32
    (N, 3, S, S) normalised, or uint8 (N, S, S, 3) cropped pixels; and the indices of the paths
    read (an unreadable file is left out, as predict skips it)."""
    prep = Preprocessing.from_dict(preprocessing)
    rows, kept = [], []
    for k, path in enumerate(paths):
        try:
            image = load_image(path, min_side=prep.resize_size)
        except ImageDecodeError:
            continue
        rows.append(np.asarray(prep.resize_and_crop(image), np.uint8) if input_type == "uint8"
                    else prep.to_array(image))
        kept.append(k)
    if not rows:
        side = prep.size
        return np.zeros((0, side, side, 3) if input_type == "uint8" else (0, 3, side, side),
                        np.uint8 if input_type == "uint8" else np.float32), kept
    return np.stack(rows), kept


def check_images(run_dir: Path | None, n: int = 8) -> list[str]:
    """A few of the run's own images to compare a converted model with ONNX on: validation rows
    first, then training rows, spread over the classes."""
    rows = split_rows(run_dir, "val") or split_rows(run_dir, "train")
    return [path for path, _ in spread(rows, n)]


def run_in_pieces(session, rows: np.ndarray, outputs: list[str], piece: int = 16) -> list[np.ndarray]:
    """An ONNX Runtime session over ``rows`` in pieces of ``piece`` (bounded memory)."""
    parts = [session.run(outputs, {"images": rows[i:i + piece]}) for i in range(0, len(rows), piece)]
    return [np.concatenate([p[j] for p in parts]) for j in range(len(outputs))]
