"""Scoring a clustering against known classes, the k-means baseline, and how many clusters
to make when nobody says."""
from __future__ import annotations

import numpy as np

from graft.clustering.embedding import Projection, as_matrix
from graft.errors import GraftError


def match_clusters(labels, clusters) -> dict[int, int]:
    """The one-to-one cluster -> class map that agrees with the most images (the Hungarian
    algorithm on the contingency table, scipy's ``linear_sum_assignment``). With more clusters
    than classes, the clusters left over map to no class (absent from the dict)."""
    from scipy.optimize import linear_sum_assignment

    labels, clusters = np.asarray(labels, dtype=np.int64), np.asarray(clusters, dtype=np.int64)
    table = np.zeros((clusters.max() + 1, labels.max() + 1), dtype=np.int64)
    np.add.at(table, (clusters, labels), 1)
    rows, cols = linear_sum_assignment(-table)
    return {int(r): int(c) for r, c in zip(rows, cols)}


def cluster_accuracy(labels, clusters) -> float:
    """Share of images whose cluster maps to their class under :func:`match_clusters`: the
    clustering accuracy of the deep-clustering literature (e.g. SCAN, Van Gansbeke et al. 2020).
    ``labels``, ``clusters``: (n,) integers >= 0."""
    labels, clusters = np.asarray(labels), np.asarray(clusters)
    if labels.shape != clusters.shape or labels.size == 0:
        raise GraftError(f"labels {labels.shape} and clusters {clusters.shape} must be the same non-empty length")
    mapping = match_clusters(labels, clusters)
    return float(np.mean([mapping.get(int(c), -1) == int(t) for c, t in zip(clusters, labels)]))


def cluster_scores(labels, clusters) -> dict:
    """``{"accuracy": Hungarian-matched accuracy, "nmi": normalized mutual information}`` (sklearn)."""
    from sklearn.metrics import normalized_mutual_info_score

    return {"accuracy": round(cluster_accuracy(labels, clusters), 4),
            "nmi": round(float(normalized_mutual_info_score(labels, clusters)), 4)}


def kmeans_clusters(X, k: int, seed: int = 0, projection: Projection | None = None) -> np.ndarray:
    """k-means (scikit-learn, 10 starts) on the same projected features as the clustering head:
    the baseline it is measured against. (n,) cluster indices."""
    from sklearn.cluster import KMeans

    Z = (projection or Projection(seed=seed).fit(X)).transform(X)
    return KMeans(k, n_init=10, random_state=seed).fit_predict(Z).astype(np.int64)


def estimate_clusters(X, seed: int = 0, most: int = 50) -> int:
    """How many groups the features seem to hold: the largest gap among the first ``most``
    eigenvalues of the normalised Laplacian of the 10-nearest-neighbour graph (the eigengap
    heuristic, von Luxburg 2007). A rough estimate; callers over-cluster on top of it."""
    from scipy.sparse import csr_matrix
    from scipy.sparse.csgraph import laplacian

    from graft.clustering.embedding import nearest_neighbours

    Z = Projection(seed=seed).fit_transform(as_matrix(X))
    n = Z.shape[0]
    if n < 4:
        return 2
    index, similarity = nearest_neighbours(Z, 10)
    graph = csr_matrix((np.maximum(similarity, 0).ravel(), (np.repeat(np.arange(n), index.shape[1]), index.ravel())),
                       shape=(n, n))
    graph = graph.maximum(graph.T)
    values = np.sort(np.linalg.eigvalsh(laplacian(graph, normed=True).toarray()))[:min(most, n - 1) + 1]
    gaps = np.diff(values)[1:]  # the gap after the first eigenvalue would say 1 group
    return int(np.argmax(gaps) + 2)
