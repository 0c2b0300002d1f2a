"""Which images to label next, on frozen features.

Cold start (no labels yet): TypiClust (Hacohen, Dekel & Weinshall 2022, "Active Learning on
a Budget: Opposite Strategies Suit High and Low Budgets"): k-means into as many clusters as
images to pick, and from each cluster its most typical image (highest kNN density), largest
clusters first. With some labels: k-means over the labelled and pool images into (labelled +
budget) clusters, and from each cluster that holds no labelled image yet (largest first) the
image with the highest typicality x (1 - margin)^2, where the margin is that between the two
most probable classes of the current model (logistic regression on the labelled features):
typical images the model is unsure of ("typical-uncertain", the default); the most typical
image of each such cluster ("typical", TypiClust); or, among k-means clusters of the pool, the
image the model is least sure of ("uncertain"). flowers17's second round of 34 after 34 typical
picks (bench/bench_select.py, 3 seeds): 0.810, 0.809 and 0.780 against 0.779 for 34 random ones;
ProbCover (Yehuda et al. 2022) 0.805 at best, coreset k-centre greedy 0.781 and BADGE 0.772 in the
same bench (bench/select_baselines.py), so they are not offered.
"""
from __future__ import annotations

import numpy as np

from graft.clustering.embedding import Projection, as_matrix, typicality
from graft.errors import GraftError

STRATEGIES = ("typical-uncertain", "typical", "uncertain")


def _kmeans(Z: np.ndarray, k: int, seed: int) -> np.ndarray:
    import warnings

    from sklearn.cluster import KMeans

    with warnings.catch_warnings():
        # a pool with repeated images has fewer distinct points than k: graft says so in its own words
        warnings.filterwarnings("ignore", message="Number of distinct clusters")
        return KMeans(k, n_init=3, random_state=seed).fit_predict(Z)


def _check(n_pool: int, n: int) -> None:
    if not 1 <= n <= n_pool:
        raise GraftError(f"cannot pick {n} images from a pool of {n_pool}: ask for 1 to {n_pool}")


def select_typical(X, n: int, seed: int = 0) -> np.ndarray:
    """Cold start: ``n`` indices into ``X`` (pool features, (m, d)), in the order to label
    them: the most typical image of each of ``n`` k-means clusters, largest cluster first.
    A pool with fewer than ``n`` distinct images (repeated copies) gives one pick per distinct
    image, with one warning saying so."""
    Z = Projection(seed=seed).fit_transform(X)
    _check(len(Z), n)
    groups = _kmeans(Z, n, seed)
    found = np.unique(groups)
    if len(found) < n:
        import warnings

        distinct = len(np.unique(as_matrix(X, "pool features"), axis=0))
        warnings.warn(f"the pool holds only {distinct} distinct images (the others repeat them), so {len(found)} "
                      f"were picked, not {n}", stacklevel=2)
    return _typical_of(Z, groups, found, n)


def _typical_of(Z: np.ndarray, groups: np.ndarray, candidates, n: int, weight=None) -> np.ndarray:
    """The most typical member of each candidate group (largest group first), ``n`` of them;
    typicality times ``weight`` (m,) when given."""
    dense = typicality(Z, groups) * (1 if weight is None else weight)
    sizes = np.bincount(groups, minlength=groups.max() + 1)
    ordered = sorted(candidates, key=lambda g: (-sizes[g], g))
    return np.array([np.flatnonzero(groups == g)[np.argmax(dense[groups == g])] for g in ordered[:n]], dtype=np.int64)


def select_next(X, n: int, labelled_X, labelled_y, seed: int = 0, strategy: str = "typical-uncertain") -> np.ndarray:
    """``n`` indices into pool features ``X`` (m, d) to label next, given labelled features
    ``labelled_X`` (l, d) and their classes ``labelled_y`` (l,); ``strategy`` in
    :data:`STRATEGIES` (module docstring). Ranked: the first is the one to label first."""
    X, L = as_matrix(X, "pool features"), as_matrix(labelled_X, "labelled features")
    _check(len(X), n)
    if strategy not in STRATEGIES:
        raise GraftError(f"strategy must be one of {', '.join(STRATEGIES)}, got {strategy!r}")
    projection = Projection(seed=seed).fit(np.concatenate([X, L]))
    Z, ZL = projection.transform(X), projection.transform(L)
    if strategy != "uncertain":
        weight = (1 - uncertainty_margin(Z, ZL, np.asarray(labelled_y))) ** 2 if strategy == "typical-uncertain" \
            else None
        groups = _kmeans(np.concatenate([Z, ZL]), min(len(Z) + len(ZL), len(ZL) + n), seed)
        pool_groups, covered = groups[:len(Z)], set(groups[len(Z):].tolist())
        free = [g for g in np.unique(pool_groups) if g not in covered]
        picked = list(_typical_of(Z, pool_groups, free, n, weight)) if free else []
        if len(picked) < n:  # fewer uncovered clusters than picks: the most uncertain of the rest
            rest = np.setdiff1d(np.arange(len(Z)), picked)
            extra = select_next(X[rest], n - len(picked), L, labelled_y, seed, "uncertain")
            picked += list(rest[extra])
        return np.array(picked, dtype=np.int64)
    margin = uncertainty_margin(Z, ZL, np.asarray(labelled_y))
    groups = _kmeans(Z, n, seed)
    sizes = np.bincount(groups, minlength=n)
    ordered = sorted(np.unique(groups), key=lambda g: (-sizes[g], g))
    return np.array([np.flatnonzero(groups == g)[np.argmin(margin[groups == g])] for g in ordered], dtype=np.int64)


def uncertainty_margin(Z: np.ndarray, labelled_Z: np.ndarray, labelled_y: np.ndarray) -> np.ndarray:
    """Per pool row (m,): the probability of its most probable class minus that of the second
    (0 = undecided), from a logistic regression (scikit-learn, C=1) on the labelled rows. With
    one labelled class only, every row gets 0."""
    from sklearn.linear_model import LogisticRegression

    if len(np.unique(labelled_y)) < 2:
        return np.zeros(len(Z))
    probabilities = LogisticRegression(C=1.0, max_iter=1000).fit(labelled_Z, labelled_y).predict_proba(Z)
    top = np.sort(probabilities, axis=1)
    return top[:, -1] - top[:, -2]


def mean_pairwise_distance(X) -> float:
    """Mean Euclidean distance between distinct rows of L2-normalised ``X`` (a set's diversity)."""
    from graft.clustering.embedding import unit_rows

    U = unit_rows(as_matrix(X))
    if len(U) < 2:
        return 0.0
    d = np.sqrt(np.maximum(2 - 2 * (U @ U.T), 0))
    return float(d.sum() / (len(U) * (len(U) - 1)))
