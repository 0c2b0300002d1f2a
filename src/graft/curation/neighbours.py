"""Nearest neighbours by cosine similarity of centred, unit-length features, in blocks so
that memory stays at ``block x N`` floats whatever the number of images."""
from __future__ import annotations

import numpy as np

BLOCK = 1024


def centred_unit(features: np.ndarray) -> np.ndarray:
    """(N, D) -> (N, D) float32: each row L2-normalised, the mean row subtracted, normalised
    again. Centring removes the direction every image shares, which makes unrelated images'
    cosines spread around 0 instead of crowding near 1 (BENCHMARKS.md, issue 25)."""
    x = np.asarray(features, np.float32)
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    x = x - x.mean(0, keepdims=True)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def nearest(unit: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """``(indices (N, k), similarities (N, k))`` of each row's ``k`` most similar other rows
    (itself excluded), most similar first. ``unit``: rows of :func:`centred_unit`."""
    n = len(unit)
    k = max(0, min(k, n - 1))
    indices = np.zeros((n, k), np.int64)
    similarities = np.zeros((n, k), np.float32)
    if k == 0:
        return indices, similarities
    for start in range(0, n, BLOCK):
        stop = min(n, start + BLOCK)
        block = unit[start:stop] @ unit.T
        block[np.arange(stop - start), np.arange(start, stop)] = -np.inf  # not its own neighbour
        top = np.argpartition(-block, k - 1, axis=1)[:, :k]
        values = np.take_along_axis(block, top, axis=1)
        order = np.argsort(-values, axis=1)
        indices[start:stop] = np.take_along_axis(top, order, axis=1)
        similarities[start:stop] = np.take_along_axis(values, order, axis=1)
    return indices, similarities
