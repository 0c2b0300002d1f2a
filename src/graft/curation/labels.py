"""Likely wrong labels: images whose given class the other images do not support.

Two views of every image, neither of which has seen the image's own label:

* **out-of-fold probabilities**: a logistic regression on the features (unit length, then
  PCA-whitened to at most 128 dimensions, C = 0.1), fitted ``folds`` times on the other folds
  (cross_val_predict). This is the input confident learning needs (Northcutt et al. 2021,
  "Confident learning: estimating uncertainty in dataset labels").
* **neighbours' votes**: the fraction of the image's 10 nearest other images (cosine of the
  centred features) labelled with each class, a kNN view (Bahri et al. 2020, "Deep k-NN for
  noisy labels").

Their mean is the image's class distribution; ``score`` is the probability it gives the
given class (self-confidence). An image is flagged when the score is below ``threshold``
(0.075), and its suggested class is the distribution's argmax. On flowers17 with 5 % of the
labels flipped this finds the flips with precision 0.93-0.94 and recall 0.96-0.99 (3 seeds),
where cleanlab's confident learning on the regression alone gives 0.79-0.88 / 0.75-0.87
(BENCHMARKS.md, issue 25; ``method="confident-learning"`` runs cleanlab's
``find_label_issues`` on the same distribution instead).
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from graft.curation.neighbours import centred_unit, nearest
from graft.errors import GraftError

LABEL_METHODS = ("threshold", "confident-learning")
PCA_DIMENSIONS = 128
NEIGHBOURS = 10


@dataclass
class LabelIssues:
    """Per image (N,): ``score`` (the given class's probability, 0..1), ``suggested`` (class
    index), ``flagged`` (bool), and ``probabilities`` (N, K) they came from."""

    score: np.ndarray
    suggested: np.ndarray
    flagged: np.ndarray
    probabilities: np.ndarray


def out_of_fold_probabilities(features: np.ndarray, labels: np.ndarray, n_classes: int, *, folds: int = 5,
                              C: float = 0.1, seed: int = 0) -> np.ndarray:
    """(N, K) probabilities, each row from a logistic regression that did not see that image.

    ``features`` (N, D) float, ``labels`` (N,) ints in ``[0, n_classes)``. The folds are
    stratified; a class with fewer images than ``folds`` lowers the number of folds (at least 2).
    The PCA is fitted on every image without labels, so no label leaks into a held-out row."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold
    from threadpoolctl import threadpool_limits

    labels = np.asarray(labels)
    x = np.asarray(features, np.float64)
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    with threadpool_limits(1):  # see below; eigh of 1280 x 1280 took 15 s wall with all threads on a busy machine
        x = whitened(x, min(PCA_DIMENSIONS, x.shape[1], len(x) - 1))
    counts = np.bincount(labels, minlength=n_classes)
    splits = int(max(2, min(folds, counts[counts > 0].min())))
    probabilities = np.zeros((len(labels), n_classes))
    # one BLAS thread: these small problems lose more to thread hand-offs than they gain (as graft's heads)
    with warnings.catch_warnings(), threadpool_limits(1):  # a class absent from a fold is scored 0 there
        warnings.simplefilter("ignore")
        for train, held in StratifiedKFold(splits, shuffle=True, random_state=seed).split(x, labels):
            model = LogisticRegression(C=C, max_iter=1000).fit(x[train], labels[train])
            probabilities[np.ix_(held, model.classes_)] = model.predict_proba(x[held])
    return probabilities


def whitened(x: np.ndarray, dims: int) -> np.ndarray:
    """(N, dims): ``x`` centred and projected on its ``dims`` leading principal axes, each scaled
    to unit variance (PCA whitening, from the D x D covariance's eigenvectors: one small
    symmetric eigenproblem instead of an SVD of the data)."""
    centred = x - x.mean(0)
    values, vectors = np.linalg.eigh(centred.T @ centred / max(len(x) - 1, 1))
    top = np.argsort(values)[::-1][:dims]
    return centred @ vectors[:, top] / np.sqrt(np.maximum(values[top], 1e-12))


def neighbour_votes(features: np.ndarray, labels: np.ndarray, n_classes: int, k: int = NEIGHBOURS) -> np.ndarray:
    """(N, K): the fraction of each image's ``k`` nearest other images in each class."""
    labels = np.asarray(labels)
    indices, _ = nearest(centred_unit(features), k)
    votes = np.zeros((len(labels), n_classes))
    for column in range(indices.shape[1]):
        np.add.at(votes, (np.arange(len(labels)), labels[indices[:, column]]), 1.0)
    return votes / max(indices.shape[1], 1)


def find_label_issues(features: np.ndarray, labels: np.ndarray, n_classes: int, *, threshold: float = 0.075,
                      method: str = "threshold", folds: int = 5, seed: int = 0) -> LabelIssues:
    """Score every image's label; flag the likely wrong ones (see the module docstring).

    ``method="confident-learning"`` flags with cleanlab's ``find_label_issues`` (its default
    ``prune_by_noise_rate``) on the same probabilities; it needs ``pip install 'graft-vision[audit]'``
    (GraftError otherwise). Needs at least two classes with two images each."""
    if method not in LABEL_METHODS:
        raise GraftError(f"unknown label method {method!r}: {', '.join(LABEL_METHODS)}")
    labels = np.asarray(labels)
    counts = np.bincount(labels, minlength=n_classes)
    if (counts >= 2).sum() < 2:
        raise GraftError("checking labels needs at least two classes with two readable images each")
    probabilities = (out_of_fold_probabilities(features, labels, n_classes, folds=folds, seed=seed)
                     + neighbour_votes(features, labels, n_classes)) / 2
    score = probabilities[np.arange(len(labels)), labels]
    if method == "threshold":
        flagged = score < threshold
    else:
        flagged = _cleanlab_issues(labels, probabilities)
    flagged &= counts[labels] >= 2  # a class's only image was never in a training fold: nothing says it is wrong
    return LabelIssues(score, probabilities.argmax(1), flagged, probabilities)


def _cleanlab_issues(labels: np.ndarray, probabilities: np.ndarray) -> np.ndarray:
    try:
        from cleanlab.filter import find_label_issues as cleanlab_find
    except ImportError:
        raise GraftError("--label-method confident-learning needs cleanlab: "
                         "pip install 'graft-vision[audit]'") from None
    rows = probabilities / np.maximum(probabilities.sum(1, keepdims=True), 1e-12)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return np.asarray(cleanlab_find(labels, rows), bool)
