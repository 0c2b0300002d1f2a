"""Second-round selection rules from the literature that bench_select.py measures beside
graft's strategies (they lost to `typical-uncertain` on flowers17, so they are not in graft):
ProbCover (Yehuda et al. 2022), coreset k-centre greedy (Sener & Savarese 2018) and BADGE
(Ash et al. 2020). Each takes unit rows ``Z`` (n, d) in graft's projection, the indices of the
labelled rows and returns ``n`` new indices."""
from __future__ import annotations

import numpy as np

PROBCOVER_DELTAS = (0.7, 0.8, 0.9, 1.0)


def _distances(Z: np.ndarray, rows: np.ndarray) -> np.ndarray:
    return np.sqrt(np.maximum(2 - 2 * Z @ Z[rows].T, 0))  # unit rows: |a-b|^2 = 2 - 2 a.b


def probcover(Z: np.ndarray, labelled: np.ndarray, n: int, delta: float) -> np.ndarray:
    """Greedy maximum coverage of delta-balls: each pick covers the most rows not yet within
    ``delta`` (Euclidean, unit rows) of a labelled or picked row."""
    ball = _distances(Z, np.arange(len(Z))) <= delta
    covered = ball[labelled].any(0)
    taken = np.zeros(len(Z), bool)
    taken[labelled] = True
    picks = []
    for _ in range(n):
        gain = np.where(taken, -1, (ball & ~covered).sum(1))
        i = int(np.argmax(gain))
        picks.append(i)
        taken[i] = True
        covered |= ball[i]
    return np.array(picks)


def coreset(Z: np.ndarray, labelled: np.ndarray, n: int) -> np.ndarray:
    """k-centre greedy seeded with the labelled rows: each pick is the row farthest from all
    labelled and picked rows."""
    far = _distances(Z, labelled).min(1)
    picks = []
    for _ in range(n):
        i = int(np.argmax(far))
        picks.append(i)
        far = np.minimum(far, _distances(Z, np.array([i]))[:, 0])
    return np.array(picks)


def badge(Z: np.ndarray, labelled: np.ndarray, labels: np.ndarray, n: int, seed: int) -> np.ndarray:
    """k-means++ seeding on gradient embeddings: (p - onehot(argmax p)) outer z for each pool
    row, p from a logistic regression (C=1) on the labelled rows."""
    from sklearn.cluster import kmeans_plusplus
    from sklearn.linear_model import LogisticRegression

    pool = np.setdiff1d(np.arange(len(Z)), labelled)
    p = LogisticRegression(C=1.0, max_iter=1000).fit(Z[labelled], labels).predict_proba(Z[pool])
    gradients = ((p - np.eye(p.shape[1])[p.argmax(1)])[:, :, None] * Z[pool][:, None, :]).reshape(len(pool), -1)
    _, index = kmeans_plusplus(gradients, n, random_state=seed)
    return pool[index]
