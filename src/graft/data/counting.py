"""Counting folder scans: a command should list each data folder once (issue 26); tests and
benchmarks check it with :func:`count_scans`."""
from __future__ import annotations

from collections import Counter
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

_COUNTERS: list[Counter] = []  # the open count_scans() blocks


@contextmanager
def count_scans() -> Iterator[Counter]:
    """Count the folder scans while inside: yields a :class:`collections.Counter` of folder
    (absolute :class:`~pathlib.Path`) -> how many times
    :func:`graft.data.folders.scan_folder` or :func:`~graft.data.folders.scan_unlabelled`
    listed it."""
    counter: Counter = Counter()
    _COUNTERS.append(counter)
    try:
        yield counter
    finally:
        _COUNTERS.remove(counter)


def counted(root: Path) -> None:
    """Called by each scan with the folder it lists."""
    for counter in _COUNTERS:
        counter[root] += 1
