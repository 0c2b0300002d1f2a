"""Classical heads on frozen features: the public entry :func:`fit_head` and its result.

The heads are scikit-learn estimators registered once in :mod:`graft.heads.registry`
(``logreg``, ``linear-svm``, ``rbf-svm``, ``knn``, ``prototype``); :func:`fit_head` fits one
by name and returns a :class:`FittedHead`: the config + tensors of a head module of
:mod:`graft.heads.modules`, which a model artifact saves. This needs numpy and scikit-learn
only, no torch: a second fit on cached features starts in a fraction of the time (see
``recipes/frozen.py``). ``FittedHead.logits`` computes the same scores as the torch module, in
numpy; a test holds the two together.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from graft.errors import GraftError
from graft.heads.registry import HEADS, head_estimator
from graft.heads.search import GRAM_MAX_IMAGES, feature_scaler, single_threaded_blas, softmax

__all__ = ["CLASSICAL_HEADS", "CLASS_WEIGHTED_HEADS", "FittedHead", "GRAM_MAX_IMAGES", "check_head_options",
           "feature_scaler", "fit_head", "fitted_head", "head_estimator", "single_threaded_blas"]

# The registry itself (name -> HeadEntry; ``.load()`` gives the estimator class), under its older name.
CLASSICAL_HEADS = HEADS


def _estimator_classes() -> list[type]:
    return [entry.load() for entry in HEADS.values()]


# The heads that take scikit-learn's class_weight: those whose estimator has the keyword.
CLASS_WEIGHTED_HEADS = tuple(name for name, cls in zip(HEADS, _estimator_classes())
                             if "class_weight" in cls().get_params())
# Each module kind's numpy forward pass, from the estimators that produce it.
_FORWARD = {cls.kind: cls.forward for cls in _estimator_classes()}


@dataclass
class FittedHead:
    """A fitted head as module config + tensors (numpy), and what was chosen for it.

    ``config`` and ``state`` rebuild the torch module (:meth:`module`); ``params`` is what
    cross-validation chose (or was fixed), ``cv_accuracy`` the chosen value's mean CV score
    (None when nothing was cross-validated), ``seconds`` the fit's wall time.
    """

    config: dict
    state: dict[str, np.ndarray]
    name: str
    params: dict = field(default_factory=dict)
    cv_accuracy: float | None = None
    seconds: float = 0.0

    def logits(self, X: np.ndarray) -> np.ndarray:
        """The head module's logits (n, num_classes) for features ``X`` (n, d), in numpy."""
        return _FORWARD[self.config["kind"]](self.config, self.state, np.asarray(X, np.float32))

    def probabilities(self, X: np.ndarray) -> np.ndarray:
        """Softmax of :meth:`logits`: (n, num_classes) float32."""
        return softmax(self.logits(X))

    @property
    def module(self):
        """The torch head module (imports torch)."""
        from graft.heads.modules import head_from_state

        return head_from_state(self.config, self.state)


def check_head_options(name: str, class_weight: str | None = None) -> None:
    """Raise GraftError for an unknown head or a class weighting it cannot take (before any work)."""
    if name not in HEADS:
        raise GraftError(f"unknown head {name!r}; choose one of {', '.join(HEADS)}")
    if class_weight not in (None, "balanced"):
        raise GraftError(f"class_weight must be 'balanced' or None, got {class_weight!r}")
    if class_weight and name not in CLASS_WEIGHTED_HEADS:
        raise GraftError(f"--class-weight balanced does not apply to the {name} head; use one of "
                         f"{', '.join(CLASS_WEIGHTED_HEADS)}")


def fitted_head(name: str, estimator, seconds: float = 0.0) -> FittedHead:
    """The :class:`FittedHead` of a fitted head estimator (registered as ``name``)."""
    return FittedHead(estimator.config_, estimator.state_, name, dict(estimator.best_params_),
                      estimator.cv_score_, seconds)


def fit_head(name: str, X: np.ndarray, y: np.ndarray, num_classes: int, seed: int = 0,  # noqa: PLR0913
             class_weight: str | None = None, params: dict | None = None) -> FittedHead:
    """Fit head ``name`` on features ``X`` (n, d) and class indices ``y`` (n,).

    A thin wrapper over the registered estimator (:func:`graft.heads.registry.head_estimator`):
    ``head_estimator(name, num_classes=..., random_state=seed, ...).fit(X, y)``.

    Parameters
    ----------
    name : a registered head (:data:`graft.heads.registry.HEAD_NAMES`).
    num_classes : rows of the head; classes absent from ``y`` are never predicted.
    seed : shuffles the cross-validation folds.
    class_weight : "balanced" weighs each class by n / (k * n_class); None for equal weights.
    params : a fitted head's ``.params``: fixes the cross-validated hyper-parameter instead of
        choosing it (a final refit on more data keeps what validation chose).

    Returns
    -------
    FittedHead

    Raises
    ------
    GraftError
        For an unknown head, a class weighting it cannot take, or fewer than two classes in ``y``.
    """
    check_head_options(name, class_weight)
    start = time.perf_counter()
    estimator = head_estimator(name)
    settings = {"num_classes": num_classes, "random_state": seed, "class_weight": class_weight}
    tuned = getattr(type(estimator), "tuned", None)
    if params and tuned:
        settings[tuned] = params[tuned]
    estimator.set_params(**{k: v for k, v in settings.items() if k in estimator.get_params()})
    estimator.fit(np.asarray(X, np.float32), np.asarray(y))
    return fitted_head(name, estimator, time.perf_counter() - start)
