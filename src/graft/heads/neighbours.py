"""The classical heads that compare with stored training vectors: k nearest neighbours and class
prototypes (nearest class mean), as scikit-learn estimators (see :mod:`graft.heads.estimators`)."""
from __future__ import annotations

import numpy as np

from graft.heads.estimators import ClassicalHead
from graft.heads.search import feature_scaler, standardize_l2


def knn_logits(config: dict, state: dict, X: np.ndarray) -> np.ndarray:
    """``KNNHead``: log of the vote fractions of the k most cosine-similar training vectors."""
    similarity = standardize_l2(X, state["mean"], state["scale"]) @ state["memory"].T
    k = config["k"]
    # descending similarity; a stable sort keeps torch.topk's lowest-index-first tie order
    nearest = np.argsort(-similarity, axis=1, kind="stable")[:, :k]
    votes = np.zeros((len(X), config["num_classes"]), np.float32)
    np.add.at(votes, (np.arange(len(X))[:, None], state["memory_labels"][nearest]), 1.0)
    return np.log(votes / k + 1e-6)


class KNNClassifier(ClassicalHead):
    """k nearest training images by cosine similarity of standardised features; probabilities
    are the vote fractions (logits log(votes / k + 1e-6)).

    Parameters
    ----------
    k : int or None, default None
        Neighbours; None chooses it from ``ks`` (those at most a third of the training set, at
        least 1) by stratified ``cv``-fold GridSearchCV over scikit-learn's cosine
        ``KNeighborsClassifier``, scored by accuracy.
    ks : sequence of int, default (1, 3, 5, 9)
    num_classes : int or None, default None
        Columns of the output; None means ``max(y) + 1``.
    cv : int, default 3
    random_state : int, default 0

    Attributes
    ----------
    memory_ : ndarray (n, d) float32
        The training vectors, standardised and unit-norm; ``memory_labels_`` (n,) their classes.
    config_, state_, best_params_, cv_score_, classes_ : see :class:`~graft.heads.estimators.ClassicalHead`.
    """

    kind = "knn"
    forward = staticmethod(knn_logits)
    tuned, grid, search_param = "k", "ks", "n_neighbors"

    def __init__(self, k=None, ks=(1, 3, 5, 9), num_classes=None, cv=3, random_state=0):
        self.k = k
        self.ks = ks
        self.num_classes = num_classes
        self.cv = cv
        self.random_state = random_state

    def _fit_head(self, X, y, num_classes):
        from sklearn.neighbors import KNeighborsClassifier

        mean, scale = feature_scaler(X)
        Z = standardize_l2(X, mean, scale)
        candidates = [k for k in self.ks if k <= max(1, len(y) // 3)] or [1]
        k = int(self._choose(KNeighborsClassifier(metric="cosine", algorithm="brute"), Z, y, values=candidates))
        self.best_params_["k"] = k
        self.memory_, self.memory_labels_ = Z.astype(np.float32), y.astype(np.int64)
        config = {"kind": "knn", "in_features": int(X.shape[1]), "num_classes": int(num_classes),
                  "n_train": int(len(y)), "k": k}
        return config, {"mean": mean, "scale": scale, "memory": self.memory_, "memory_labels": self.memory_labels_}


def prototype_logits(config: dict, state: dict, X: np.ndarray) -> np.ndarray:
    """``PrototypeHead``: temperature x cosine similarity to each class's mean vector."""
    prototypes = state["prototypes"]
    unit = prototypes / np.maximum(np.linalg.norm(prototypes, axis=1, keepdims=True), 1e-12)
    return config["temperature"] * standardize_l2(X, state["mean"], state["scale"]) @ unit.T


class PrototypeClassifier(ClassicalHead):
    """Nearest class mean by cosine similarity (a prototypical-network head on frozen features:
    Snell et al., 2017, "Prototypical Networks for Few-shot Learning"); nothing is tuned.

    Parameters
    ----------
    temperature : float, default 10.0
        Logits are temperature x cosine similarity, so the softmax is not flat.
    class_weight : {"balanced", None}, default None
        Accepted so that every head takes the same weighting option; one mean per class is
        balanced already, so "balanced" changes nothing.
    num_classes : int or None, default None
        Rows of ``prototypes_``; None means ``max(y) + 1``. An absent class's prototype is zero.

    Attributes
    ----------
    prototypes_ : ndarray (num_classes, d) float32
        Each class's mean standardised unit vector.
    """

    kind = "prototype"
    forward = staticmethod(prototype_logits)

    def __init__(self, temperature=10.0, class_weight=None, num_classes=None):
        self.temperature = temperature
        self.class_weight = class_weight
        self.num_classes = num_classes

    def _fit_head(self, X, y, num_classes):
        mean, scale = feature_scaler(X)
        Z = standardize_l2(X, mean, scale)
        self.prototypes_ = np.zeros((num_classes, X.shape[1]), np.float32)
        for c in np.unique(y):
            self.prototypes_[c] = Z[y == c].mean(0)
        self.best_params_ = {"temperature": self.temperature}
        config = {"kind": "prototype", "in_features": int(X.shape[1]), "num_classes": int(num_classes),
                  "temperature": self.temperature}
        return config, {"mean": mean, "scale": scale, "prototypes": self.prototypes_}
