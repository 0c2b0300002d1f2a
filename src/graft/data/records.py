"""The values a scan gives: :class:`Record` (one image file and its class index) and
:class:`ImageFolder` (the records of one dataset folder). :mod:`graft.data.folders` makes them
from a folder on disk, :mod:`graft.data.splits` splits them; both re-use these types."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from graft.errors import DataError


@dataclass(frozen=True)
class Record:
    """One image file and its class index."""

    path: Path
    label: int


@dataclass
class ImageFolder:
    """The records of one dataset folder; ``classes[i]`` is the name of label ``i``.

    Attributes
    ----------
    root : pathlib.Path
    classes : list of str
    records : list of Record
        ``(path, label)`` per image, in scanning order.
    """

    root: Path
    classes: list[str]
    records: list[Record]

    def __len__(self) -> int:
        return len(self.records)

    @property
    def paths(self) -> list[Path]:
        return [record.path for record in self.records]

    @property
    def labels(self) -> np.ndarray:
        return np.array([record.label for record in self.records], dtype=np.int64)

    def subset(self, indices) -> "ImageFolder":
        """The records at ``indices`` (integer positions, or a boolean mask), in that order."""
        chosen = np.asarray(indices)
        if chosen.dtype == bool:
            if chosen.shape != (len(self.records),):
                raise DataError(
                    f"boolean mask of shape {chosen.shape} does not match {len(self.records)} records"
                )
            chosen = np.flatnonzero(chosen)
        chosen = chosen.reshape(-1)
        if chosen.size and not np.issubdtype(chosen.dtype, np.integer):
            raise DataError(f"subset indices must be integers, got dtype {chosen.dtype}")
        return ImageFolder(self.root, list(self.classes), [self.records[int(i)] for i in chosen])

    def class_counts(self) -> dict[str, int]:
        """Images per class, in label order; a class without images counts 0."""
        counts = np.bincount(self.labels, minlength=len(self.classes))
        return {name: int(counts[label]) for label, name in enumerate(self.classes)}
