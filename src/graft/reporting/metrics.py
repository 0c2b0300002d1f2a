"""The numbers of a classification report: what metrics.json holds, computed by scikit-learn.

* :func:`classification_metrics`: accuracy, macro precision / recall / F1 and the per-class
  scores (``sklearn.metrics.precision_recall_fscore_support``);
* :func:`top_k_accuracy`: top-k accuracy for k = 3, 5 (``sklearn.metrics.top_k_accuracy_score``).

The text table of the same numbers is :func:`graft.reporting.tables.report_text`, the picture
:func:`graft.reporting.plots.confusion_matrix_png`.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Scored:
    """What a model said about one labelled set of images: the input of an evaluation's files.

    ``y_true``, ``y_pred``: class indices, shape (n,), into ``classes`` (the names, in label
    order); ``probabilities``: shape (n, classes), or None (then no top-k accuracy and no
    predictions.csv); ``paths``: the n image paths, or None (no predictions.csv); ``split``:
    predictions.csv's ``split`` column (``val``, ``test``, ...). Arrays are converted on
    construction, probabilities to float64.
    """

    y_true: np.ndarray
    y_pred: np.ndarray
    classes: list[str]
    probabilities: np.ndarray | None = None
    paths: list | None = None
    split: str = "val"

    def __post_init__(self):
        self.y_true, self.y_pred = np.asarray(self.y_true), np.asarray(self.y_pred)
        if self.probabilities is not None:
            self.probabilities = np.asarray(self.probabilities, dtype=np.float64)


def classification_metrics(y_true, y_pred, classes: list[str]) -> dict:
    """accuracy, macro precision / recall / F1 and per-class precision/recall/F1/support.

    ``y_true``, ``y_pred``: class indices, shape (n,), into ``classes`` (the names, in label
    order). Returns ``{"accuracy", "macro_precision", "macro_recall", "macro_f1": float in
    [0, 1], "per_class": {name: {"precision", "recall", "f1": float, "support": int}}}``, every
    class listed in ``classes`` order. A class predicted but never right scores 0, not NaN.

    The macro averages are over the classes present in ``y_true``: a class with no images in
    the evaluation set has no recall to measure (scikit-learn's ``average="macro"`` restricted
    to those labels). With no images at all every score is 0.0.
    """
    from sklearn.metrics import accuracy_score, precision_recall_fscore_support

    labels = list(range(len(classes)))
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=labels, zero_division=0)
    present = [label for label in labels if support[label] > 0]
    macro = (0.0, 0.0, 0.0)
    if present:
        macro = precision_recall_fscore_support(y_true, y_pred, labels=present, average="macro",
                                                zero_division=0)[:3]
    return {
        "accuracy": float(accuracy_score(y_true, y_pred)) if len(y_true) else 0.0,
        "macro_precision": float(macro[0]),
        "macro_recall": float(macro[1]),
        "macro_f1": float(macro[2]),
        "per_class": {
            name: {"precision": float(precision[i]), "recall": float(recall[i]),
                   "f1": float(f1[i]), "support": int(support[i])}
            for i, name in enumerate(classes)
        },
    }


def top_k_accuracy(y_true, probabilities, ks=(3, 5)) -> dict[str, float]:
    """``{str(k): share of images whose true class is among the k most probable}``.

    ``y_true``: class indices, shape (n,); ``probabilities``: shape (n, classes), any scores
    that rank the classes. Only the k below the number of classes are reported (top-k over
    all classes is 1 by definition); nothing with no images. Ties are ranked as
    ``sklearn.metrics.top_k_accuracy_score`` ranks them (a stable sort: the higher class index
    first).
    """
    from sklearn.metrics import top_k_accuracy_score

    y_true, probabilities = np.asarray(y_true), np.asarray(probabilities)
    labels = np.arange(probabilities.shape[1])
    return {str(k): float(top_k_accuracy_score(y_true, probabilities, k=k, labels=labels))
            for k in ks if k < probabilities.shape[1] and len(y_true)}
