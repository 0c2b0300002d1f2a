"""Classifier heads: torch modules that sit on pooled features, and classical fits that make them.

Two registries:

* ``HEAD_MODULES``: kind -> ``nn.Module`` class with ``config()`` / ``from_config(cfg)``, so a
  saved model rebuilds its head from JSON plus safetensors (nothing pickled). Fine-tuning
  uses ``linear`` and ``mlp``; classical fits produce any of them.
* ``CLASSICAL_HEADS``: name -> fit function ``(X, y, seed) -> FittedHead`` that trains a
  scikit-learn model on frozen features (hyper-parameters chosen by cross-validation on the
  training set) and converts it to a head module that reproduces its decisions exactly.

A linear head (logreg, linear-svm) is folded into one ``nn.Linear``: feature standardisation
is absorbed into its weights, so it *is* the network's new final FC layer.
"""
from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from .errors import GraftError

HEAD_MODULES: dict[str, type[nn.Module]] = {}
CLASSICAL_HEADS: dict[str, Callable] = {}


def register_head_module(kind: str):
    def wrap(cls):
        HEAD_MODULES[kind] = cls
        cls.kind = kind
        return cls
    return wrap


def build_head(config: dict) -> nn.Module:
    kind = config.get("kind")
    if kind not in HEAD_MODULES:
        raise GraftError(f"unknown head kind {kind!r}; known: {', '.join(sorted(HEAD_MODULES))}")
    return HEAD_MODULES[kind].from_config(config)


# ----------------------------------------------------------------------------- modules
@register_head_module("linear")
class LinearHead(nn.Module):
    """logits = W x + b."""

    def __init__(self, in_features: int, num_classes: int):
        super().__init__()
        self.fc = nn.Linear(in_features, num_classes)

    def forward(self, x):
        return self.fc(x)

    def config(self) -> dict:
        return {"kind": "linear", "in_features": self.fc.in_features, "num_classes": self.fc.out_features}

    @classmethod
    def from_config(cls, cfg):
        return cls(cfg["in_features"], cfg["num_classes"])


@register_head_module("mlp")
class MLPHead(nn.Module):
    """FC(hidden) -> ReLU -> Dropout(p) -> FC(classes): the "FCHeadNet" head transplant."""

    def __init__(self, in_features: int, num_classes: int, hidden: int = 256, dropout: float = 0.5):
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden)
        self.act = nn.ReLU()
        self.drop = nn.Dropout(dropout)
        self.fc2 = nn.Linear(hidden, num_classes)

    def forward(self, x):
        return self.fc2(self.drop(self.act(self.fc1(x))))

    def config(self) -> dict:
        return {"kind": "mlp", "in_features": self.fc1.in_features, "num_classes": self.fc2.out_features,
                "hidden": self.fc1.out_features, "dropout": self.drop.p}

    @classmethod
    def from_config(cls, cfg):
        return cls(cfg["in_features"], cfg["num_classes"], cfg["hidden"], cfg["dropout"])


class _StandardizedInput(nn.Module):
    """Shared by the non-linear heads: z = (x - mean) / scale, then L2-normalised."""

    def __init__(self, in_features: int):
        super().__init__()
        self.register_buffer("mean", torch.zeros(in_features))
        self.register_buffer("scale", torch.ones(in_features))

    def standardize(self, x):
        return F.normalize((x - self.mean) / self.scale, dim=1)


@register_head_module("prototype")
class PrototypeHead(_StandardizedInput):
    """Nearest class mean by cosine similarity: logits = temperature * cos(z, prototype_c)."""

    def __init__(self, in_features: int, num_classes: int, temperature: float = 10.0):
        super().__init__(in_features)
        self.register_buffer("prototypes", torch.zeros(num_classes, in_features))
        self.temperature = temperature

    def forward(self, x):
        return self.temperature * self.standardize(x) @ F.normalize(self.prototypes, dim=1).T

    def config(self):
        return {"kind": "prototype", "in_features": self.prototypes.shape[1],
                "num_classes": self.prototypes.shape[0], "temperature": self.temperature}

    @classmethod
    def from_config(cls, cfg):
        return cls(cfg["in_features"], cfg["num_classes"], cfg["temperature"])


@register_head_module("knn")
class KNNHead(_StandardizedInput):
    """k nearest training vectors by cosine similarity; probabilities are vote fractions.

    Logits are log(votes + 1e-6) so that softmax gives back the vote fractions.
    """

    def __init__(self, in_features: int, num_classes: int, n_train: int, k: int = 5):
        super().__init__(in_features)
        self.register_buffer("memory", torch.zeros(n_train, in_features))
        self.register_buffer("memory_labels", torch.zeros(n_train, dtype=torch.long))
        self.num_classes = num_classes
        self.k = k

    def forward(self, x):
        similarity = self.standardize(x) @ self.memory.T
        nearest = similarity.topk(self.k, dim=1).indices
        votes = F.one_hot(self.memory_labels[nearest], self.num_classes).sum(dim=1).float() / self.k
        return torch.log(votes + 1e-6)

    def config(self):
        return {"kind": "knn", "in_features": self.memory.shape[1], "num_classes": self.num_classes,
                "n_train": self.memory.shape[0], "k": self.k}

    @classmethod
    def from_config(cls, cfg):
        return cls(cfg["in_features"], cfg["num_classes"], cfg["n_train"], cfg["k"])


@register_head_module("rbf-svm")
class RBFSVMHead(_StandardizedInput):
    """One-vs-rest RBF-kernel SVMs: score_c = sum_i alpha_ic exp(-gamma |z - s_i|^2) + b_c."""

    def __init__(self, in_features: int, num_classes: int, n_support: int, gamma: float = 1.0):
        super().__init__(in_features)
        self.register_buffer("support", torch.zeros(n_support, in_features))
        self.register_buffer("dual_coef", torch.zeros(n_support, num_classes))
        self.register_buffer("intercept", torch.zeros(num_classes))
        self.gamma = gamma

    def forward(self, x):
        z = self.standardize(x)
        sq = (z * z).sum(1, keepdim=True) - 2 * z @ self.support.T + (self.support ** 2).sum(1)
        return torch.exp(-self.gamma * sq.clamp_min(0)) @ self.dual_coef + self.intercept

    def config(self):
        return {"kind": "rbf-svm", "in_features": self.support.shape[1],
                "num_classes": self.dual_coef.shape[1], "n_support": self.support.shape[0],
                "gamma": self.gamma}

    @classmethod
    def from_config(cls, cfg):
        return cls(cfg["in_features"], cfg["num_classes"], cfg["n_support"], cfg["gamma"])


# ----------------------------------------------------------------------------- classical fits
@dataclass
class FittedHead:
    """A head module fitted on features, and what was chosen for it."""

    module: nn.Module
    name: str
    params: dict = field(default_factory=dict)
    cv_accuracy: float | None = None
    seconds: float = 0.0


def register_classical_head(name: str):
    def wrap(fn):
        CLASSICAL_HEADS[name] = fn
        return fn
    return wrap


def fit_head(name: str, X: np.ndarray, y: np.ndarray, num_classes: int, seed: int = 0) -> FittedHead:
    if name not in CLASSICAL_HEADS:
        raise GraftError(f"unknown head {name!r}; choose one of {', '.join(CLASSICAL_HEADS)}")
    if len(np.unique(y)) < 2:
        raise GraftError("the training features hold fewer than two classes")
    start = time.perf_counter()
    fitted = CLASSICAL_HEADS[name](np.asarray(X, np.float32), np.asarray(y), num_classes, seed)
    fitted.seconds = time.perf_counter() - start
    return fitted


def _scaler(X):
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
    return mean, scale


def _cv_choose(make, grid: dict, X, y, seed):
    """Best value of one hyper-parameter by stratified k-fold CV accuracy on the training set.

    Values are tried in the order given; an estimator with ``warm_start`` (logistic
    regression) continues from the previous value's solution within a fold, which makes the
    whole sweep cost little more than one fit per fold.
    """
    from sklearn.model_selection import StratifiedKFold

    (param, values), = grid.items()
    folds = min(3, int(np.bincount(y).min()) if len(y) else 0)
    if folds < 2 or len(values) == 1:  # a class with one image: nothing to cross-validate
        return values[len(values) // 2], None
    correct = np.zeros(len(values))
    splitter = StratifiedKFold(folds, shuffle=True, random_state=seed)
    for train_idx, test_idx in splitter.split(X, y):
        estimator = make()
        if "warm_start" in estimator.get_params():
            estimator.set_params(warm_start=True)
        for i, value in enumerate(values):
            estimator = estimator if "warm_start" in estimator.get_params() else make()
            estimator.set_params(**{param: value})
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # convergence chatter on the weaker grid points
                estimator.fit(X[train_idx], y[train_idx])
            correct[i] += (estimator.predict(X[test_idx]) == y[test_idx]).sum()
    best = int(np.argmax(correct))  # ties go to the first (most regularised) value
    return values[best], float(correct[best] / len(y))


def _full_class_rows(rows: np.ndarray, present: np.ndarray, num_classes: int, fill: float) -> np.ndarray:
    """Scatter per-present-class rows into a (num_classes, ...) array; absent classes get ``fill``."""
    out = np.full((num_classes,) + rows.shape[1:], fill, dtype=np.float32)
    out[present] = rows
    return out


def _fold_linear(coef, intercept, mean, scale, present, num_classes) -> LinearHead:
    """W (x - m)/s + b == (W/s) x + (b - W m/s): standardisation folded into one FC layer."""
    weight = coef / scale
    bias = intercept - weight @ mean
    head = LinearHead(len(mean), num_classes)
    with torch.no_grad():
        head.fc.weight.copy_(torch.from_numpy(_full_class_rows(weight, present, num_classes, 0.0)))
        head.fc.bias.copy_(torch.from_numpy(_full_class_rows(bias, present, num_classes, -1e4)))
    return head


@register_classical_head("logreg")
def fit_logreg(X, y, num_classes, seed):
    from sklearn.linear_model import LogisticRegression

    mean, scale = _scaler(X)
    Z = (X - mean) / scale
    make = lambda: LogisticRegression(max_iter=300)  # noqa: E731
    C, cv = _cv_choose(make, {"C": [0.1, 0.3, 1.0]}, Z, y, seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = LogisticRegression(C=C, max_iter=1000).fit(Z, y)
    present = model.classes_
    coef, intercept = model.coef_, model.intercept_
    if len(present) == 2:  # sklearn keeps one row for two classes: logits (0, w.x+b) are equivalent
        coef = np.vstack([-coef / 2, coef / 2])
        intercept = np.array([-intercept[0] / 2, intercept[0] / 2])
    return FittedHead(_fold_linear(coef, intercept, mean, scale, present, num_classes), "logreg", {"C": C}, cv)


def _svc(kernel: str, **params):
    """libsvm's native one-vs-one SVC: several times faster to cross-validate than one-vs-rest,
    so C is chosen with it; the head itself is one-vs-rest (one score per class)."""
    from sklearn.svm import SVC

    return SVC(kernel=kernel, **params)


def _ovr_svc(kernel: str, **params):
    from sklearn.multiclass import OneVsRestClassifier
    from sklearn.svm import SVC

    return OneVsRestClassifier(SVC(kernel=kernel, **params))


@register_classical_head("linear-svm")
def fit_linear_svm(X, y, num_classes, seed):
    # libsvm one-vs-rest: on 1280-d features liblinear's LinearSVC converges far slower.
    mean, scale = _scaler(X)
    Z = (X - mean) / scale
    C, cv = _cv_choose(lambda: _svc("linear"), {"C": [0.001, 0.01, 0.1]}, Z, y, seed)
    model = _ovr_svc("linear", C=C).fit(Z, y)
    present = model.classes_
    if len(present) == 2:
        w = model.estimators_[0].coef_.ravel()
        b = model.estimators_[0].intercept_[0]
        coef, intercept = np.vstack([-w / 2, w / 2]), np.array([-b / 2, b / 2])
    else:
        coef = np.vstack([est.coef_.ravel() for est in model.estimators_])
        intercept = np.array([est.intercept_[0] for est in model.estimators_])
    return FittedHead(_fold_linear(coef, intercept, mean, scale, present, num_classes), "linear-svm", {"C": C}, cv)


def _standardize_l2(X, mean, scale):
    Z = (X - mean) / scale
    return Z / np.maximum(np.linalg.norm(Z, axis=1, keepdims=True), 1e-12)


def _set_standardization(head, mean, scale):
    head.mean.copy_(torch.from_numpy(mean.astype(np.float32)))
    head.scale.copy_(torch.from_numpy(scale.astype(np.float32)))


@register_classical_head("rbf-svm")
def fit_rbf_svm(X, y, num_classes, seed):
    mean, scale = _scaler(X)
    Z = _standardize_l2(X, mean, scale)
    gamma = 1.0  # unit-norm inputs: squared distances lie in [0, 4]
    C, cv = _cv_choose(lambda: _svc("rbf", gamma=gamma), {"C": [1.0, 10.0, 100.0]}, Z, y, seed)
    model = _ovr_svc("rbf", gamma=gamma, C=C).fit(Z, y)
    present = model.classes_
    estimators = model.estimators_
    if len(present) == 2:  # one binary SVM: score(class1) = f, score(class0) = -f
        est = estimators[0]
        support_idx = est.support_
        dual = np.zeros((len(support_idx), num_classes), np.float32)
        dual[:, present[1]] = est.dual_coef_[0]
        dual[:, present[0]] = -est.dual_coef_[0]
        intercept = np.full(num_classes, -1e4, np.float32)
        intercept[present[1]], intercept[present[0]] = est.intercept_[0], -est.intercept_[0]
    else:
        support_idx = np.unique(np.concatenate([est.support_ for est in estimators]))
        position = {int(s): i for i, s in enumerate(support_idx)}
        dual = np.zeros((len(support_idx), num_classes), np.float32)
        intercept = np.full(num_classes, -1e4, np.float32)
        for cls, est in zip(present, estimators):
            for s, a in zip(est.support_, est.dual_coef_[0]):
                dual[position[int(s)], cls] = a
            intercept[cls] = est.intercept_[0]
    head = RBFSVMHead(X.shape[1], num_classes, len(support_idx), gamma)
    with torch.no_grad():
        _set_standardization(head, mean, scale)
        head.support.copy_(torch.from_numpy(Z[support_idx].astype(np.float32)))
        head.dual_coef.copy_(torch.from_numpy(dual))
        head.intercept.copy_(torch.from_numpy(intercept))
    return FittedHead(head, "rbf-svm", {"C": C, "gamma": gamma, "n_support": int(len(support_idx))}, cv)


@register_classical_head("knn")
def fit_knn(X, y, num_classes, seed):
    from sklearn.neighbors import KNeighborsClassifier

    mean, scale = _scaler(X)
    Z = _standardize_l2(X, mean, scale)
    ks = [k for k in (1, 3, 5, 9) if k <= max(1, len(y) // 3)] or [1]
    make = lambda: KNeighborsClassifier(metric="cosine", algorithm="brute")  # noqa: E731
    k, cv = _cv_choose(make, {"n_neighbors": ks}, Z, y, seed)
    head = KNNHead(X.shape[1], num_classes, len(y), int(k))
    with torch.no_grad():
        _set_standardization(head, mean, scale)
        head.memory.copy_(torch.from_numpy(Z.astype(np.float32)))
        head.memory_labels.copy_(torch.from_numpy(np.asarray(y, np.int64)))
    return FittedHead(head, "knn", {"k": int(k)}, cv)


@register_classical_head("prototype")
def fit_prototype(X, y, num_classes, seed):
    mean, scale = _scaler(X)
    Z = _standardize_l2(X, mean, scale)
    head = PrototypeHead(X.shape[1], num_classes)
    prototypes = np.zeros((num_classes, X.shape[1]), np.float32)
    for c in np.unique(y):
        prototypes[c] = Z[y == c].mean(0)
    with torch.no_grad():
        _set_standardization(head, mean, scale)
        head.prototypes.copy_(torch.from_numpy(prototypes))
    return FittedHead(head, "prototype", {"temperature": head.temperature}, None)
