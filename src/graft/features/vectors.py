"""Feature vectors of a set of images (:class:`Features`), and the cache-first gathering that
fills them (:func:`gather_features`): vectors from the on-disk cache, the misses computed by the
caller (a :class:`~graft.features.extractor.FeatureExtractor`), unreadable files reported."""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from graft.errors import DataError, ImageDecodeError
from graft.features.cache import file_identity, open_feature_cache


@dataclass
class Features:
    """Feature vectors of the images that decoded, plus what was skipped and why.

    Attributes
    ----------
    vectors : numpy.ndarray
        Shape (n, D), float32: one row per decoded image, in ``paths`` order.
    paths : list of str
        The n images.
    labels : numpy.ndarray, optional
        Shape (n,), int64 class indices into ``classes``; None for unlabelled images.
    classes : list of str, optional
        Class names in label order.
    skipped : list of dict
        ``{"path", "reason"}`` of each image that did not decode.
    cached : int
        How many of the rows were read from the feature cache.
    """

    vectors: np.ndarray
    paths: list[str]
    labels: np.ndarray | None = None
    classes: list[str] | None = None
    skipped: list[dict] = field(default_factory=list)
    cached: int = 0  # how many vectors came from the cache

    def __len__(self) -> int:
        return len(self.paths)

    def summary(self) -> str:
        """One line: how many vectors, and whether they are labelled (by which class folders)."""
        if self.classes:
            shown = ", ".join(self.classes[:5]) + (", ..." if len(self.classes) > 5 else "")
            what = f"labelled by {len(self.classes)} class folders ({shown})"
        else:
            what = "unlabelled images (no class folders)"
        return (f"{self.vectors.shape[0]} images x {self.vectors.shape[1]} features, {what}; "
                f"{self.cached} from cache, {len(self.skipped)} skipped")

    def save(self, path: str | Path) -> Path:
        """Write an ``.npz`` (no pickled objects: loads with ``allow_pickle=False``)."""
        path = Path(path)
        if path.suffix != ".npz":
            path = path.with_suffix(path.suffix + ".npz") if path.suffix else path.with_suffix(".npz")
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(
            path,
            features=self.vectors,
            paths=np.asarray(self.paths, dtype=str),
            labels=self.labels if self.labels is not None else np.zeros(0, dtype=np.int64),
            classes=np.asarray(self.classes or [], dtype=str),
            skipped_paths=np.asarray([s["path"] for s in self.skipped], dtype=str),
            skipped_reasons=np.asarray([s["reason"] for s in self.skipped], dtype=str),
        )
        return path

    @classmethod
    def load(cls, path: str | Path) -> "Features":
        with np.load(path, allow_pickle=False) as z:
            labels = z["labels"] if len(z["labels"]) else None
            return cls(
                vectors=z["features"],
                paths=[str(p) for p in z["paths"]],
                labels=labels,
                classes=[str(c) for c in z["classes"]] or None,
                skipped=[{"path": str(p), "reason": str(r)}
                         for p, r in zip(z["skipped_paths"], z["skipped_reasons"])],
            )


def skip_image(skipped: list, error: ImageDecodeError, strict: bool) -> None:
    """Raise ``error`` when ``strict``; else warn and record it in ``skipped``."""
    if strict:
        raise error
    warnings.warn(f"skipping {error.path}: {error.reason}", stacklevel=3)
    skipped.append({"path": error.path, "reason": error.reason})


def gather_features(extractor_key: str | None, paths, labels=None, classes=None, strict: bool = False,
                    compute=None) -> Features | None:
    """Vectors for ``paths`` from the cache, computing the misses with ``compute``.

    ``compute(paths, identities, todo, vectors, skipped, strict, cache)`` fills ``vectors`` at
    the indices in ``todo``. With ``compute=None`` this answers from the cache alone and returns
    None if anything is missing. Known-bad files are reported from the cache too.
    """
    paths = [Path(p) for p in paths]
    skipped: list[dict] = []
    identities: list[str | None] = []
    for path in paths:
        try:
            identities.append(file_identity(path))
        except OSError as exc:
            identities.append(None)
            skip_image(skipped, ImageDecodeError(path, _os_reason(exc)), strict)

    cache = open_feature_cache(extractor_key) if extractor_key else None
    try:
        present = [i for i in identities if i]
        known = cache.get_many(present) if cache is not None else {}
        failed = cache.get_failures(present) if cache is not None else {}
        vectors: list[np.ndarray | None] = [known.get(i) if i else None for i in identities]
        todo = []
        for k, identity in enumerate(identities):
            if identity is None or vectors[k] is not None:
                continue
            if identity in failed:
                skip_image(skipped, ImageDecodeError(paths[k], failed[identity]), strict)
            else:
                todo.append(k)
        if todo:
            if compute is None:
                return None
            compute(paths, identities, todo, vectors, skipped, strict, cache)
    finally:
        if cache is not None:
            cache.close()

    keep = [k for k, v in enumerate(vectors) if v is not None]
    if not keep and paths:
        raise DataError(f"none of the {len(paths)} images could be read; first problem: "
                        f"{skipped[0]['path']}: {skipped[0]['reason']}")
    stacked = np.stack([vectors[k] for k in keep]).astype(np.float32) if keep else np.zeros((0, 0), np.float32)
    skipped.sort(key=lambda item: item["path"])
    return Features(
        vectors=stacked,
        paths=[str(paths[k]) for k in keep],
        labels=None if labels is None else np.asarray(labels)[keep],
        classes=classes,
        skipped=skipped,
        cached=len(known),
    )


def _os_reason(exc: OSError) -> str:
    if isinstance(exc, FileNotFoundError):
        return "file not found"
    return exc.strerror or str(exc)
