"""Copies of one photo among a set of images: exact (the same bytes, or the same file reached
twice) and near (re-encoded, resized, slightly cropped).

Near copies are found in two steps. Candidates are pairs whose centred, unit-length frozen
features have a cosine of at least ``feature_threshold`` (0.8): on flowers17 every JPEG-60,
half-size and 90 %-crop copy of 60 scored at least 0.84 with its original; and each image's
nearest one when it stands out (``STANDS_OUT``), as a half-size copy among the more alike
hymenoptera photos does (0.71, the next image 0.37). A candidate is
confirmed when small grey thumbnails agree pixel for pixel: the normalised cross-correlation
of 24 x 24 thumbnails, the whole image and its central 90 % each way, at least
``pixel_threshold`` (0.95). Copies score 0.999 or more; two different photos of one scene
(the same flower a step aside) score lower, which the features alone cannot tell
(BENCHMARKS.md, issue 25).
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from graft.curation.neighbours import centred_unit, nearest
from graft.data.overlap import duplicate_groups

CANDIDATES = 10  # nearest images looked at per image
# an image's nearest one is a candidate too when it stands out from the second nearest (Lowe's ratio test in
# spirit): a half-size hymenoptera bee met its original at cosine 0.71 and the next image at 0.37
STANDS_OUT = (0.5, 0.25)  # (at least this cosine, this far above the second nearest)
THUMBNAIL = 24
CROPS = (1.0, 0.9)  # the central part of each image compared, so that a 90 % crop meets its original


@dataclass(frozen=True)
class Copy:
    """Images ``first`` and ``second`` (indices, first < second) hold the same photo:
    ``kind`` "exact" (same content, score 1) or "near" (score: the features' cosine)."""

    first: int
    second: int
    kind: str
    score: float


def exact_copies(paths: list) -> list[Copy]:
    """Pairs of files with the same bytes: each member of a group with the group's first."""
    position = {}
    for index, path in enumerate(paths):
        position.setdefault(str(path), index)
    found = []
    for group in duplicate_groups([Path(p) for p in paths]):
        indices = sorted(position[str(p)] for p in group)
        found += [Copy(indices[0], other, "exact", 1.0) for other in indices[1:] if other != indices[0]]
    return found


def _thumbnails(path) -> list[np.ndarray] | None:
    from graft.data.decode import load_image
    from graft.errors import ImageDecodeError

    try:
        image = load_image(path, min_side=4 * THUMBNAIL).convert("L")
    except ImageDecodeError:
        return None
    width, height = image.size
    out = []
    for part in CROPS:
        box = ((1 - part) * width / 2, (1 - part) * height / 2, (1 + part) * width / 2, (1 + part) * height / 2)
        pixels = np.asarray(image.resize((THUMBNAIL, THUMBNAIL), box=box), np.float32).ravel()
        pixels = pixels - pixels.mean()
        out.append(pixels / max(float(np.linalg.norm(pixels)), 1e-6))
    return out


def pixel_agreement(first, second) -> float:
    """Normalised cross-correlation (-1..1) of two images' grey thumbnails, the best over the
    whole images and their central 90 % (see the module docstring); 0 if either cannot be read."""
    a, b = _thumbnails(first), _thumbnails(second)
    if a is None or b is None:
        return 0.0
    return max(float(x @ y) for x in a for y in b)


def near_copies(paths: list, features: np.ndarray, *, feature_threshold: float = 0.8,
                pixel_threshold: float = 0.95, skip: set | None = None, keep=None) -> list[Copy]:
    """Confirmed near copies among ``paths`` (features (N, D), one row per path); pairs in
    ``skip`` ((first, second) with first < second: e.g. the exact copies), or for which
    ``keep(first, second)`` is false, are not looked at (no image is read for them)."""
    skip = skip or set()
    indices, similarities = nearest(centred_unit(features), CANDIDATES)
    candidates = {}
    for row in range(len(indices)):
        columns = set(np.flatnonzero(similarities[row] >= feature_threshold).tolist())
        if similarities.shape[1] >= 2 and similarities[row, 0] >= STANDS_OUT[0] \
                and similarities[row, 0] - similarities[row, 1] >= STANDS_OUT[1]:
            columns.add(0)
        for column in sorted(columns):
            pair = tuple(sorted((row, int(indices[row, column]))))
            if pair not in skip and (keep is None or keep(*pair)):
                candidates[pair] = float(similarities[row, column])
    thumbs: dict[int, list | None] = {}

    def agreement(i: int, j: int) -> float:
        for k in (i, j):
            if k not in thumbs:
                thumbs[k] = _thumbnails(paths[k])
        if thumbs[i] is None or thumbs[j] is None:
            return 0.0
        return max(float(x @ y) for x in thumbs[i] for y in thumbs[j])

    return [Copy(i, j, "near", round(score, 4)) for (i, j), score in sorted(candidates.items())
            if agreement(i, j) >= pixel_threshold]


def find_copies(paths: list, features: np.ndarray, *, feature_threshold: float = 0.8,
                pixel_threshold: float = 0.95) -> list[Copy]:
    """Exact copies, then the near copies among the other pairs; ``features`` has one row per
    path (the readable images)."""
    exact = exact_copies(paths)
    near = near_copies(paths, features, feature_threshold=feature_threshold, pixel_threshold=pixel_threshold,
                       skip={(c.first, c.second) for c in exact})
    return exact + near


def warn_near_copies(features: dict) -> None:
    """Warn when a scored split (val, test) holds near copies of training images (re-encoded,
    resized, cropped: :func:`near_copies`); byte copies are warned apart. ``features``: split name
    (``train``, ``val``, ``test``) -> its :class:`graft.features.extractor.Features` (``paths``, ``vectors``)."""
    scored = [name for name in ("val", "test") if name in features and len(features[name])]
    if not scored or not len(features["train"]):
        return
    paths = [p for name in ["train", *scored] for p in features[name].paths]
    split = [name for name in ["train", *scored] for _ in features[name].paths]
    vectors = np.concatenate([features[name].vectors for name in ["train", *scored]])
    exact = {(c.first, c.second) for c in exact_copies(paths)}

    def across(i: int, j: int) -> bool:  # one training image, one scored: only those pairs are read
        return (split[i] == "train") != (split[j] == "train")

    for copy in near_copies(paths, vectors, skip=exact, keep=across):
        if split[copy.first] == "train":
            warnings.warn(f"{split[copy.second]} image {paths[copy.second]} is a near copy of training image "
                          f"{paths[copy.first]} (re-encoded, resized or cropped): its score counts a seen photo as "
                          "unseen; `graft audit` lists every such leak", stacklevel=3)
            return  # one line: the audit has the list
