"""Steps the classical heads share: standardisation, BLAS on one thread, the hyper-parameter
search (scikit-learn's ``GridSearchCV``), the kernel matrix and the one-vs-rest SVCs."""
from __future__ import annotations

import os
import warnings

import numpy as np

# Above this many training images the (n, n) float64 kernel matrix (512 MB at 8000) costs more
# memory than it saves time; libsvm then computes each kernel value itself.
GRAM_MAX_IMAGES = 8000


def single_threaded_blas():
    """A context in which BLAS runs on one thread. The heads' solvers multiply small matrices
    (a few thousand images x 1280 features) hundreds of times, and threaded OpenBLAS spends
    more on waking and syncing its threads than it saves: on 2 cores graft's logreg fit on
    flowers17 takes 0.12 s this way against 0.56 s (bench/bench_head_threads.py)."""
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1, user_api="blas")


def feature_scaler(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature mean and scale (each (d,), float32) for standardisation.

    The scale is floored at a tenth of the median feature's: near-constant features would
    otherwise get weights of 1/std (hundreds) once folded into the linear layer, which
    amplifies float32 rounding (ONNX vs torch drift) without adding information.
    """
    mean = X.mean(0)
    scale = X.std(0)
    floor = 0.1 * float(np.median(scale))
    scale = np.maximum(scale, floor if floor > 0 else 1e-8)
    scale[scale <= 1e-8] = 1.0
    return mean.astype(np.float32), scale.astype(np.float32)


def standardize_l2(X: np.ndarray, mean: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """(X - mean) / scale, each row then scaled to unit L2 norm."""
    Z = (X - mean) / scale
    return Z / np.maximum(np.linalg.norm(Z, axis=1, keepdims=True), 1e-12)


def choose_by_cv(estimator, param: str, values, X: np.ndarray, y: np.ndarray, *, folds: int = 3,  # noqa: PLR0913
                 seed: int = 0, balanced: bool = False):
    """The best of ``values`` for ``estimator``'s ``param`` by scikit-learn's own search:
    stratified k-fold (shuffled with ``seed``) on the training set, ``GridSearchCV``, or for a
    ``LogisticRegression``'s C, ``LogisticRegressionCV``, which warm-starts each fold's fit from
    the previous C (the sweep costs little more than one fit per fold).

    The score is the accuracy over all held-out images (each fold weighed by its size, as one
    pooled out-of-fold prediction), or with ``balanced`` scikit-learn's balanced accuracy (mean
    per-class recall) averaged over folds, so that a small class counts as much as a large one
    when the head is class-weighted. Ties go to the first (most regularised) value. ``k`` is
    ``folds`` or the smallest class's size if less; with fewer than 2 folds possible (a class
    with one image) or one value, nothing is cross-validated and the middle value is returned.
    A pairwise estimator (``SVC(kernel="precomputed")``) takes the (n, n) kernel matrix as
    ``X``: GridSearchCV slices it per fold (rows test, columns train). The fits run in threads
    (libsvm and lbfgs release the GIL; nothing is copied to other processes).

    Returns
    -------
    (value, score) : the chosen value and its CV score (None when nothing was validated).
    """
    from joblib import parallel_config
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV, StratifiedKFold

    values = list(values)
    k = min(folds, int(np.bincount(y).min()) if len(y) else 0)
    if k < 2 or len(values) == 1:
        return values[len(values) // 2], None
    splitter = StratifiedKFold(k, shuffle=True, random_state=seed)
    sizes = np.array([len(test) for _, test in splitter.split(X, y)])
    scoring = "balanced_accuracy" if balanced else "accuracy"
    with warnings.catch_warnings(), parallel_config(backend="threading"):
        warnings.simplefilter("ignore")  # convergence chatter on the weaker grid points
        if isinstance(estimator, LogisticRegression) and param == "C":
            scores = _logistic_path_scores(estimator, values, X, y, splitter, scoring)
        else:
            search = GridSearchCV(estimator, {param: values}, scoring=scoring, cv=splitter, refit=False,
                                  n_jobs=os.cpu_count(), error_score="raise").fit(X, y)
            scores = np.array([search.cv_results_[f"split{i}_test_score"] for i in range(k)])
    if balanced:
        pooled = scores.mean(0)
    else:  # correct predictions counted over the folds: an exact tie stays a tie
        pooled = np.rint(scores * sizes[:, None]).sum(0) / sizes.sum()
    best = int(np.argmax(np.round(pooled, 12)))
    return values[best], float(pooled[best])


def _logistic_path_scores(estimator, Cs: list, X, y, splitter, scoring: str) -> np.ndarray:
    """(folds, len(Cs)) scores of ``estimator``'s settings at each C, by ``LogisticRegressionCV``."""
    from sklearn.linear_model import LogisticRegressionCV

    search = LogisticRegressionCV(Cs=Cs, cv=splitter, scoring=scoring, solver=estimator.solver,
                                  max_iter=estimator.max_iter, tol=estimator.tol, class_weight=estimator.class_weight,
                                  n_jobs=os.cpu_count(), refit=False).fit(X, y)
    scores = search.scores_  # {class: (folds, Cs)} before scikit-learn 1.10, (folds, 1, Cs) after
    scores = next(iter(scores.values())) if isinstance(scores, dict) else scores
    return np.asarray(scores).reshape(splitter.get_n_splits(), len(Cs))


def gram(Z: np.ndarray, gamma: float | None = None) -> np.ndarray | None:
    """The (n, n) float64 kernel matrix of ``Z`` (n, d): linear (Z Z^T), or RBF
    exp(-gamma |a - b|^2) when ``gamma`` is given; None above :data:`GRAM_MAX_IMAGES`.

    Why: libsvm evaluates a kernel value as a d-term dot product each time its cache misses,
    and a fit touches most pairs; one BLAS product computes them all at once. With
    ``kernel="precomputed"`` the solver is the same, so the solution is the same to rounding,
    and C's cross-validation plus the one-vs-rest fits on flowers17 run about 10x faster.
    """
    if len(Z) > GRAM_MAX_IMAGES:
        return None
    Z = Z.astype(np.float64)
    K = Z @ Z.T
    if gamma is not None:
        squared = np.diag(K)
        K = np.exp(-gamma * np.maximum(squared[:, None] + squared[None, :] - 2 * K, 0.0))
    return K


def ovr_svc(kernel: str, Z: np.ndarray, y: np.ndarray, **params):
    """One-vs-rest SVCs fitted on ``Z`` (features, or the kernel matrix when ``kernel`` is
    "precomputed"), ``y``: one binary SVC per class, in threads (libsvm releases the GIL;
    threads, not processes, so nothing is copied or started)."""
    from joblib import parallel_config
    from sklearn.multiclass import OneVsRestClassifier
    from sklearn.svm import SVC

    with parallel_config(backend="threading", n_jobs=os.cpu_count()):
        return OneVsRestClassifier(SVC(kernel=kernel, **params), n_jobs=os.cpu_count()).fit(Z, y)


def full_class_rows(rows: np.ndarray, present: np.ndarray, num_classes: int, fill: float) -> np.ndarray:
    """Scatter per-present-class rows into a (num_classes, ...) array; absent classes get ``fill``."""
    out = np.full((num_classes,) + rows.shape[1:], fill, dtype=np.float32)
    out[present] = rows
    return out


def binary_as_two_rows(w: np.ndarray, b: float) -> tuple[np.ndarray, np.ndarray]:
    """sklearn keeps one row for two classes; logits (-f/2, f/2) give the same softmax."""
    return np.vstack([-w / 2, w / 2]), np.array([-b / 2, b / 2])


def softmax(z: np.ndarray) -> np.ndarray:
    """Row-wise softmax of logits (n, k), computed in float64, returned as float32."""
    z = np.asarray(z, np.float64)
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)
