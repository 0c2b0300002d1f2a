"""The space clusters and selections are made in: frozen features L2-normalised, projected on
their leading principal components and normalised again, so that a dot product is a cosine
similarity; nearest neighbours and typicality (kNN density) in that space."""
from __future__ import annotations

import numpy as np

from graft.errors import GraftError

DEFAULT_DIMS = 128  # flowers17 on lite0: neighbours agree as often at 128 dims as at 1280, training is ~5x cheaper
DEFAULT_NEIGHBOURS = 20  # SCAN's choice; TypiClust's density uses 20 too


def as_matrix(X, what: str = "features") -> np.ndarray:
    """``X`` as a finite float32 matrix (n, d); a GraftError naming ``what`` otherwise."""
    X = np.asarray(X, dtype=np.float32)
    if X.ndim != 2 or X.shape[0] == 0 or X.shape[1] == 0:
        raise GraftError(f"{what} must be a non-empty (images, features) matrix, got shape {X.shape}")
    if not np.isfinite(X).all():
        raise GraftError(f"{what} hold NaN or infinite values")
    return X


def unit_rows(X: np.ndarray) -> np.ndarray:
    """Each row divided by its L2 norm (an all-zero row stays zero)."""
    norms = np.linalg.norm(X, axis=1, keepdims=True)
    return (X / np.where(norms > 0, norms, 1)).astype(np.float32)


class Projection:
    """L2-normalise, centre, keep the ``dims`` leading principal directions, L2-normalise again.

    ``fit(X)`` learns the mean and directions (sklearn's PCA, seeded); ``transform(X)`` maps
    any (n, d) features to (n, min(dims, n, d)) unit rows. ``dims=None`` keeps every direction
    (centring only)."""

    def __init__(self, dims: int | None = DEFAULT_DIMS, seed: int = 0):
        self.dims, self.seed = dims, seed

    def fit(self, X) -> "Projection":
        U = unit_rows(as_matrix(X))
        self.mean_ = U.mean(0)
        keep = min(self.dims or U.shape[1], U.shape[0], U.shape[1])
        if keep < U.shape[1]:
            from sklearn.decomposition import PCA

            self.components_ = PCA(keep, random_state=self.seed).fit(U - self.mean_).components_.astype(np.float32)
        else:
            self.components_ = None
        return self

    def transform(self, X) -> np.ndarray:
        centred = unit_rows(as_matrix(X)) - self.mean_
        return unit_rows(centred @ self.components_.T if self.components_ is not None else centred)

    def fit_transform(self, X) -> np.ndarray:
        return self.fit(X).transform(X)


def nearest_neighbours(Z: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` nearest other rows of unit rows ``Z`` (n, d) by cosine similarity: (indices
    (n, k), similarities (n, k)), nearest first; ``k`` is capped at n - 1."""
    n = Z.shape[0]
    k = max(1, min(k, n - 1))
    similarity = Z @ Z.T
    np.fill_diagonal(similarity, -np.inf)
    index = np.argpartition(-similarity, k - 1, axis=1)[:, :k]
    near = np.take_along_axis(similarity, index, 1)
    order = np.argsort(-near, axis=1)
    return np.take_along_axis(index, order, 1), np.take_along_axis(near, order, 1)


def typicality(Z: np.ndarray, groups: np.ndarray | None = None, k: int = DEFAULT_NEIGHBOURS) -> np.ndarray:
    """TypiClust's typicality (Hacohen et al. 2022): the inverse of the mean Euclidean distance
    to the ``k`` nearest neighbours, computed among the rows of the same group when ``groups``
    (n,) is given (a cluster's most typical image is the densest point of that cluster).
    Shape (n,); higher is more typical; a group of one image gets 0."""
    n = Z.shape[0]
    groups = np.zeros(n, dtype=np.int64) if groups is None else np.asarray(groups)
    out = np.zeros(n, dtype=np.float64)
    for g in np.unique(groups):
        members = np.flatnonzero(groups == g)
        if len(members) < 2:
            continue
        _, similarity = nearest_neighbours(Z[members], k)
        distance = np.sqrt(np.maximum(2 - 2 * similarity, 0)).mean(1)  # unit rows: |a-b|^2 = 2 - 2 a.b
        out[members] = 1 / np.maximum(distance, 1e-6)
    return out
