"""Classical heads on frozen features: scikit-learn fits turned into head tensors.

``CLASSICAL_HEADS`` maps a name to a fit ``(X, y, num_classes, seed) -> FittedHead``. Each fit
chooses its hyper-parameter by cross-validation on the training set, then expresses the result
as the config + tensors of a head module in :mod:`graft.heads.modules` (linear, prototype, knn,
rbf-svm). This module needs numpy and scikit-learn only, no torch: a second fit on cached
features starts in a fraction of the time (see ``fit.py``). ``FittedHead.logits`` computes the
same scores as the torch module, in numpy; a test holds the two together.

A linear head (logreg, linear-svm) folds the feature standardisation into its weights, so it
is one ``nn.Linear``: the network's new final FC layer.
"""
from __future__ import annotations

import os
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from graft.defaults import HEAD_NAMES
from graft.errors import GraftError

CLASSICAL_HEADS: dict[str, Callable] = {}


@dataclass
class FittedHead:
    """A fitted head as module config + tensors (numpy), and what was chosen for it."""

    config: dict
    state: dict[str, np.ndarray]
    name: str
    params: dict = field(default_factory=dict)
    cv_accuracy: float | None = None
    seconds: float = 0.0

    def logits(self, X: np.ndarray) -> np.ndarray:
        return _NUMPY_FORWARD[self.config["kind"]](self.config, self.state, np.asarray(X, np.float32))

    def probabilities(self, X: np.ndarray) -> np.ndarray:
        z = self.logits(X).astype(np.float64)
        z -= z.max(axis=1, keepdims=True)
        e = np.exp(z)
        return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)

    @property
    def module(self):
        """The torch head module (imports torch)."""
        from graft.heads.modules import head_from_state

        return head_from_state(self.config, self.state)


def register_classical_head(name: str):
    def wrap(fn):
        CLASSICAL_HEADS[name] = fn
        return fn
    return wrap


# Heads that take scikit-learn's class_weight; a prototype head is balanced by construction
# (one mean per class, whatever its size).
CLASS_WEIGHTED_HEADS = ("logreg", "linear-svm", "rbf-svm", "prototype")


def check_head_options(name: str, class_weight: str | None = None) -> None:
    """Raise for an unknown head or a class weighting it cannot take (before any work is done)."""
    if name not in CLASSICAL_HEADS:
        raise GraftError(f"unknown head {name!r}; choose one of {', '.join(CLASSICAL_HEADS)}")
    if class_weight not in (None, "balanced"):
        raise GraftError(f"class_weight must be 'balanced' or None, got {class_weight!r}")
    if class_weight and name not in CLASS_WEIGHTED_HEADS:
        raise GraftError(f"--class-weight balanced does not apply to the {name} head; use one of "
                         f"{', '.join(CLASS_WEIGHTED_HEADS)}")


# The hyper-parameter each head chooses by cross-validation: its name in FittedHead.params
# and in the estimator.
_TUNED = {"logreg": ("C", "C"), "linear-svm": ("C", "C"), "rbf-svm": ("C", "C"), "knn": ("k", "n_neighbors")}


def fit_head(name: str, X: np.ndarray, y: np.ndarray, num_classes: int, seed: int = 0,
             class_weight: str | None = None, params: dict | None = None) -> FittedHead:
    """Fit head ``name``; ``class_weight="balanced"`` weighs each class by n / (k * n_class).

    ``params`` (a fitted head's ``.params``) fixes the hyper-parameter instead of choosing it
    by cross-validation: a final refit on more data keeps what validation chose.
    """
    check_head_options(name, class_weight)
    if len(np.unique(y)) < 2:
        raise GraftError("the training features hold fewer than two classes")
    start = time.perf_counter()
    fit = CLASSICAL_HEADS[name]
    extra = {"class_weight": class_weight} if class_weight and name != "prototype" else {}
    if params and name in _TUNED:
        reported, estimator_name = _TUNED[name]
        extra["grid"] = {estimator_name: [params[reported]]}
    with single_threaded_blas():
        fitted = fit(np.asarray(X, np.float32), np.asarray(y), num_classes, seed, **extra)
    fitted.seconds = time.perf_counter() - start
    return fitted


# ----------------------------------------------------------------------------- shared steps
def single_threaded_blas():
    """A context in which BLAS runs on one thread. The heads' solvers multiply small matrices
    (a few thousand images x 1280 features) hundreds of times, and threaded OpenBLAS spends
    more on waking and syncing its threads than it saves: on 2 cores graft's logreg fit on
    flowers17 takes 0.12 s this way against 0.56 s (bench/bench_head_threads.py)."""
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1, user_api="blas")


def feature_scaler(X):
    """Per-feature mean and scale for standardisation.

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


def _standardize_l2(X, mean, scale):
    Z = (X - mean) / scale
    return Z / np.maximum(np.linalg.norm(Z, axis=1, keepdims=True), 1e-12)


def _cv_choose(make, grid: dict, X, y, seed, balanced: bool = False, gram: bool = False):  # noqa: PLR0913
    """Best value of one hyper-parameter by stratified k-fold CV accuracy on the training set
    (``balanced``: the mean per-class recall, so that a small class counts as much as a large
    one when the head is class-weighted). ``gram``: ``X`` is an (n, n) kernel matrix of the
    training images, sliced per fold (rows test, columns train) for ``kernel="precomputed"``.

    Values are tried in the order given; an estimator with ``warm_start`` (logistic
    regression) continues from the previous value's solution within a fold, which makes the
    whole sweep cost little more than one fit per fold.
    """
    from sklearn.model_selection import StratifiedKFold

    (param, values), = grid.items()
    folds = min(3, int(np.bincount(y).min()) if len(y) else 0)
    if folds < 2 or len(values) == 1:  # a class with one image: nothing to cross-validate
        return values[len(values) // 2], None
    predicted = np.zeros((len(values), len(y)), dtype=y.dtype)
    splitter = StratifiedKFold(folds, shuffle=True, random_state=seed)

    def sweep(train_idx, test_idx):
        estimator = make()
        warm = "warm_start" in estimator.get_params()
        if warm:
            estimator.set_params(warm_start=True)
        for i, value in enumerate(values):
            estimator = estimator if warm else make()
            estimator.set_params(**{param: value})
            if gram:
                estimator.fit(X[np.ix_(train_idx, train_idx)], y[train_idx])
                predicted[i, test_idx] = estimator.predict(X[np.ix_(test_idx, train_idx)])
            else:
                estimator.fit(X[train_idx], y[train_idx])
                predicted[i, test_idx] = estimator.predict(X[test_idx])

    # The folds are independent: one thread each (libsvm and liblinear release the GIL, BLAS runs
    # on one thread here), the same predictions in less wall time on a multi-core CPU.
    with warnings.catch_warnings(), ThreadPoolExecutor(min(folds, os.cpu_count() or 1)) as pool:
        warnings.simplefilter("ignore")  # convergence chatter on the weaker grid points
        for done in [pool.submit(sweep, tr, te) for tr, te in splitter.split(X, y)]:
            done.result()
    correct = predicted == y
    if balanced:
        scores = np.mean([correct[:, y == c].mean(1) for c in np.unique(y)], axis=0)
    else:
        scores = correct.mean(1)
    best = int(np.argmax(scores))  # ties go to the first (most regularised) value
    return values[best], float(scores[best])


def _full_class_rows(rows: np.ndarray, present: np.ndarray, num_classes: int, fill: float) -> np.ndarray:
    """Scatter per-present-class rows into a (num_classes, ...) array; absent classes get ``fill``."""
    out = np.full((num_classes,) + rows.shape[1:], fill, dtype=np.float32)
    out[present] = rows
    return out


def _linear_head(coef, intercept, mean, scale, present, num_classes, name, params, cv) -> FittedHead:  # noqa: PLR0913
    """W (x - m)/s + b == (W/s) x + (b - W m/s): standardisation folded into one FC layer."""
    weight = coef / scale
    bias = intercept - weight @ mean
    config = {"kind": "linear", "in_features": int(len(mean)), "num_classes": int(num_classes)}
    state = {"fc.weight": _full_class_rows(weight, present, num_classes, 0.0),
             "fc.bias": _full_class_rows(bias, present, num_classes, -1e4)}
    return FittedHead(config, state, name, params, cv)


def _binary_as_two_rows(w: np.ndarray, b: float):
    """sklearn keeps one row for two classes; logits (-f/2, f/2) give the same softmax."""
    return np.vstack([-w / 2, w / 2]), np.array([-b / 2, b / 2])


def _standardized_state(mean, scale) -> dict:
    return {"mean": mean.astype(np.float32), "scale": scale.astype(np.float32)}


# ----------------------------------------------------------------------------- the heads
@register_classical_head("logreg")
def fit_logreg(X, y, num_classes, seed, class_weight=None, grid=None):
    from sklearn.linear_model import LogisticRegression

    mean, scale = feature_scaler(X)
    Z = (X - mean) / scale
    C, cv = _cv_choose(lambda: LogisticRegression(max_iter=300, class_weight=class_weight),
                       grid or {"C": [0.1, 0.3, 1.0]}, Z, y, seed, balanced=class_weight is not None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = LogisticRegression(C=C, max_iter=1000, class_weight=class_weight).fit(Z, y)
    coef, intercept = model.coef_, model.intercept_
    if len(model.classes_) == 2:
        coef, intercept = _binary_as_two_rows(coef.ravel(), intercept[0])
    return _linear_head(coef, intercept, mean, scale, model.classes_, num_classes, "logreg", {"C": C}, cv)


# Above this many training images the (n, n) float64 kernel matrix (512 MB at 8000) costs more
# memory than it saves time; libsvm then computes each kernel value itself.
GRAM_MAX_IMAGES = 8000


def _gram(Z: np.ndarray, gamma: float | None = None) -> np.ndarray | None:
    """The (n, n) float64 kernel matrix of ``Z``: linear (Z Z^T), or RBF exp(-gamma |a - b|^2)
    when ``gamma`` is given; None above GRAM_MAX_IMAGES.

    Why: libsvm evaluates a kernel value as a 1280-term dot product each time its cache misses,
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


def _svc(kernel: str, **params):
    """libsvm's native one-vs-one SVC: several times faster to cross-validate than one-vs-rest,
    so C is chosen with it; the head itself is one-vs-rest (one score per class)."""
    from sklearn.svm import SVC

    return SVC(kernel=kernel, **params)


def _ovr_svc(kernel: str, Z, y, **params):
    """One-vs-rest SVCs fitted on ``Z`` (features, or the kernel matrix when ``kernel`` is
    "precomputed"), ``y``: one binary SVC per class, in threads (libsvm releases the GIL;
    threads, not processes, so nothing is copied or started)."""
    from joblib import parallel_config
    from sklearn.multiclass import OneVsRestClassifier
    from sklearn.svm import SVC

    with parallel_config(backend="threading", n_jobs=os.cpu_count()):
        return OneVsRestClassifier(SVC(kernel=kernel, **params), n_jobs=os.cpu_count()).fit(Z, y)


def _kernel_svc(kernel: str, Z, y, seed, grid, class_weight, **params):  # noqa: PLR0913
    """C by cross-validation, then the one-vs-rest SVCs; on the kernel matrix where it fits in
    memory. Returns (C, cv score, binary estimators, classes) and the linear weights
    (n_estimators, d): each estimator's ``coef_``, or dual_coef @ support vectors (the same
    vector) for a precomputed linear kernel."""
    K = _gram(Z, params.get("gamma") if kernel == "rbf" else None)
    use = "precomputed" if K is not None else kernel
    C, cv = _cv_choose(lambda: _svc(use, class_weight=class_weight, **params), grid, Z if K is None else K, y, seed,
                       balanced=class_weight is not None, gram=K is not None)
    model = _ovr_svc(use, Z if K is None else K, y, C=C, class_weight=class_weight, **params)
    coef = None
    if kernel == "linear":
        coef = np.vstack([(est.coef_ if K is None else est.dual_coef_ @ Z[est.support_]).ravel()
                          for est in model.estimators_])
    return C, cv, model, coef


@register_classical_head("linear-svm")
def fit_linear_svm(X, y, num_classes, seed, class_weight=None, grid=None):
    # libsvm, not liblinear: LinearSVC converges far slower on 1280-d features.
    mean, scale = feature_scaler(X)
    Z = (X - mean) / scale
    C, cv, model, coef = _kernel_svc("linear", Z, y, seed, grid or {"C": [0.001, 0.01, 0.1]}, class_weight)
    intercept = np.array([est.intercept_[0] for est in model.estimators_])
    if len(model.classes_) == 2:
        coef, intercept = _binary_as_two_rows(coef[0], intercept[0])
    return _linear_head(coef, intercept, mean, scale, model.classes_, num_classes, "linear-svm", {"C": C}, cv)


@register_classical_head("rbf-svm")
def fit_rbf_svm(X, y, num_classes, seed, class_weight=None, grid=None):
    mean, scale = feature_scaler(X)
    Z = _standardize_l2(X, mean, scale)
    gamma = 1.0  # unit-norm inputs: squared distances lie in [0, 4]
    C, cv, model, _ = _kernel_svc("rbf", Z, y, seed, grid or {"C": [1.0, 10.0, 100.0]}, class_weight, gamma=gamma)
    present, estimators = model.classes_, model.estimators_
    intercept = np.full(num_classes, -1e4, np.float32)
    if len(present) == 2:  # one binary SVM: score(class1) = f, score(class0) = -f
        est = estimators[0]
        support_idx = est.support_
        dual = np.zeros((len(support_idx), num_classes), np.float32)
        dual[:, present[1]], dual[:, present[0]] = est.dual_coef_[0], -est.dual_coef_[0]
        intercept[present[1]], intercept[present[0]] = est.intercept_[0], -est.intercept_[0]
    else:
        support_idx = np.unique(np.concatenate([est.support_ for est in estimators]))
        position = np.searchsorted(support_idx, np.arange(len(Z)))
        dual = np.zeros((len(support_idx), num_classes), np.float32)
        for cls, est in zip(present, estimators):
            dual[position[est.support_], cls] = est.dual_coef_[0]
            intercept[cls] = est.intercept_[0]
    config = {"kind": "rbf-svm", "in_features": int(X.shape[1]), "num_classes": int(num_classes),
              "n_support": int(len(support_idx)), "gamma": gamma}
    state = {**_standardized_state(mean, scale), "support": Z[support_idx].astype(np.float32),
             "dual_coef": dual, "intercept": intercept}
    return FittedHead(config, state, "rbf-svm", {"C": C, "gamma": gamma, "n_support": int(len(support_idx))}, cv)


@register_classical_head("knn")
def fit_knn(X, y, num_classes, seed, grid=None):
    from sklearn.neighbors import KNeighborsClassifier

    mean, scale = feature_scaler(X)
    Z = _standardize_l2(X, mean, scale)
    ks = [k for k in (1, 3, 5, 9) if k <= max(1, len(y) // 3)] or [1]
    make = lambda: KNeighborsClassifier(metric="cosine", algorithm="brute")  # noqa: E731
    k, cv = _cv_choose(make, grid or {"n_neighbors": ks}, Z, y, seed)
    config = {"kind": "knn", "in_features": int(X.shape[1]), "num_classes": int(num_classes),
              "n_train": int(len(y)), "k": int(k)}
    state = {**_standardized_state(mean, scale), "memory": Z.astype(np.float32),
             "memory_labels": np.asarray(y, np.int64)}
    return FittedHead(config, state, "knn", {"k": int(k)}, cv)


@register_classical_head("prototype")
def fit_prototype(X, y, num_classes, seed, grid=None):
    mean, scale = feature_scaler(X)
    Z = _standardize_l2(X, mean, scale)
    prototypes = np.zeros((num_classes, X.shape[1]), np.float32)
    for c in np.unique(y):
        prototypes[c] = Z[y == c].mean(0)
    temperature = 10.0
    config = {"kind": "prototype", "in_features": int(X.shape[1]), "num_classes": int(num_classes),
              "temperature": temperature}
    state = {**_standardized_state(mean, scale), "prototypes": prototypes}
    return FittedHead(config, state, "prototype", {"temperature": temperature}, None)


# ----------------------------------------------------------------------------- numpy forward
# The same arithmetic as the torch modules in graft.heads.modules (tests/test_heads.py checks both).
def _linear_logits(cfg, st, X):
    return X @ st["fc.weight"].T + st["fc.bias"]


def _unit_rows(A):
    return A / np.maximum(np.linalg.norm(A, axis=1, keepdims=True), 1e-12)


def _prototype_logits(cfg, st, X):
    return cfg["temperature"] * _standardize_l2(X, st["mean"], st["scale"]) @ _unit_rows(st["prototypes"]).T


def _knn_logits(cfg, st, X):
    similarity = _standardize_l2(X, st["mean"], st["scale"]) @ st["memory"].T
    k = cfg["k"]
    # descending similarity; a stable sort keeps torch.topk's lowest-index-first tie order
    nearest = np.argsort(-similarity, axis=1, kind="stable")[:, :k]
    votes = np.zeros((len(X), cfg["num_classes"]), np.float32)
    np.add.at(votes, (np.arange(len(X))[:, None], st["memory_labels"][nearest]), 1.0)
    return np.log(votes / k + 1e-6)


def _rbf_logits(cfg, st, X):
    Z = _standardize_l2(X, st["mean"], st["scale"])
    S = st["support"]
    sq = (Z * Z).sum(1, keepdims=True) - 2 * Z @ S.T + (S * S).sum(1)
    return np.exp(-cfg["gamma"] * np.maximum(sq, 0)) @ st["dual_coef"] + st["intercept"]


_NUMPY_FORWARD = {"linear": _linear_logits, "prototype": _prototype_logits,
                  "knn": _knn_logits, "rbf-svm": _rbf_logits}
assert tuple(CLASSICAL_HEADS) == HEAD_NAMES, "keep graft.defaults.HEAD_NAMES in step"
