"""The classical heads' one registry: the single source of their names.

Each head is registered once, here, by name and by the scikit-learn estimator that fits it
(:mod:`graft.heads.estimators`, :mod:`graft.heads.neighbours`). Everything else is derived from
this table: the ``--head`` choices of ``graft fit`` (:data:`HEAD_NAMES`), the fits of
:func:`graft.heads.classical.fit_head`, the heads that take ``class_weight``, and the numpy
forward of each head's module kind. The table names its classes as ``module:Class`` strings so
that the command line reads the names without importing numpy or scikit-learn.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass


@dataclass(frozen=True)
class HeadEntry:
    """One registered head: ``name`` (``--head NAME``), ``where`` (``"module:Class"`` of its
    estimator) and a one-line ``summary``."""

    name: str
    where: str
    summary: str

    def load(self) -> type:
        """The estimator class (imports numpy and scikit-learn)."""
        module, _, cls = self.where.partition(":")
        return getattr(importlib.import_module(module), cls)


HEADS: dict[str, HeadEntry] = {}


def register_head(name: str, where: str, summary: str) -> HeadEntry:
    """Add a head to :data:`HEADS`; a name is registered once."""
    if name in HEADS:
        raise ValueError(f"head {name!r} is already registered ({HEADS[name].where})")
    HEADS[name] = HeadEntry(name, where, summary)
    return HEADS[name]


register_head("logreg", "graft.heads.estimators:LogRegClassifier",
              "multinomial logistic regression, C by cross-validation (graft fit's default)")
register_head("linear-svm", "graft.heads.estimators:LinearSVMClassifier",
              "one-vs-rest linear SVMs, C by cross-validation")
register_head("rbf-svm", "graft.heads.estimators:RBFSVMClassifier",
              "one-vs-rest RBF-kernel SVMs on unit-norm features, C by cross-validation")
register_head("knn", "graft.heads.neighbours:KNNClassifier",
              "k nearest training images by cosine similarity, k by cross-validation")
register_head("prototype", "graft.heads.neighbours:PrototypeClassifier", "nearest class mean by cosine")

# The names in registration order: graft fit's --head choices.
HEAD_NAMES: tuple[str, ...] = tuple(HEADS)


def head_estimator(name: str, **params):
    """A new, unfitted estimator of head ``name`` with ``params`` set (see each class).

    Raises
    ------
    KeyError
        For a name that is not registered (:func:`graft.heads.classical.check_head_options`
        gives the user-facing message).
    """
    return HEADS[name].load()(**params)
