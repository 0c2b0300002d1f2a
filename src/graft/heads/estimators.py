"""The classical heads as scikit-learn estimators: logistic regression and SVMs on frozen features.

Each estimator follows scikit-learn's rules (hyper-parameters are ``__init__`` keywords stored
unchanged, ``fit(X, y)`` returns ``self``, what is learned ends in ``_``, ``clone`` gives an
unfitted copy) and ends its fit as the config + tensors of a torch head module of
:mod:`graft.heads.modules` (``config_``, ``state_``): what a model artifact saves. Its
``decision_function`` is that module's forward pass in numpy, so a fit on cached features scores
without torch; a test holds the two together. Labels are class indices ``0 .. num_classes - 1``
(graft's folders number their classes); a class absent from ``y`` is never predicted.

The hyper-parameter (``C``, ``k``) is chosen by scikit-learn's ``GridSearchCV`` on the training
set (:func:`graft.heads.search.choose_by_cv`) unless it is given. A linear head (logreg,
linear-svm) folds the feature standardisation into its weights, so it is one ``nn.Linear``: the
network's new final FC layer.
"""
from __future__ import annotations

import warnings
from typing import ClassVar

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.validation import check_is_fitted

from graft.errors import GraftError
from graft.heads.search import (
    binary_as_two_rows,
    choose_by_cv,
    feature_scaler,
    full_class_rows,
    gram,
    ovr_svc,
    single_threaded_blas,
    softmax,
    standardize_l2,
)


class ClassicalHead(ClassifierMixin, BaseEstimator):
    """Base of the classical heads: fit on features (n, d), score as the head module would.

    Subclasses set ``kind`` (the :mod:`graft.heads.modules` module the head is saved as),
    ``forward`` (that module's forward pass in numpy), and, when they choose a hyper-parameter
    by cross-validation, ``tuned`` (its ``__init__`` keyword; None means "choose"), ``grid``
    (the keyword holding the candidates) and ``search_param`` (its name in the scikit-learn
    estimator searched). They implement ``_fit_head(X, y, num_classes) -> (config, state)``.

    Fitted attributes: ``classes_`` (``arange(num_classes)``), ``n_features_in_``, ``config_``
    and ``state_`` (the module's config dict and tensors, numpy), ``best_params_`` (what was
    chosen or fixed, as saved in a run's ``head_params``) and ``cv_score_`` (mean CV accuracy of
    the chosen value; None when nothing was cross-validated).
    """

    kind: ClassVar[str]
    tuned: ClassVar[str | None] = None
    grid: ClassVar[str | None] = None
    search_param: ClassVar[str | None] = None

    @staticmethod
    def forward(config: dict, state: dict, X: np.ndarray) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def fit(self, X, y):
        """Fit on features ``X`` (n, d) and class indices ``y`` (n,), with BLAS on one thread.

        Returns
        -------
        self

        Raises
        ------
        GraftError
            When ``y`` holds fewer than two classes, a negative label, or a label >= ``num_classes``.
        """
        X = np.asarray(X, np.float32)
        y = np.asarray(y)
        if X.ndim != 2 or len(X) != len(y):
            raise GraftError(f"features must be (n, d) with one label per row; got {X.shape} and {len(y)} labels")
        present = np.unique(y)
        if len(present) < 2:
            raise GraftError("the training features hold fewer than two classes")
        num_classes = int(self.num_classes) if self.num_classes is not None else int(present.max()) + 1
        if present.min() < 0 or present.max() >= num_classes:
            raise GraftError(f"labels must be class indices 0..{num_classes - 1}; got {present.min()}..{present.max()}")
        self.best_params_, self.cv_score_ = {}, None
        with single_threaded_blas():
            self.config_, self.state_ = self._fit_head(X, y.astype(np.int64), num_classes)
        self.classes_ = np.arange(num_classes)
        self.n_features_in_ = X.shape[1]
        return self

    def _choose(self, make, X, y, balanced: bool = False, values=None):
        """The hyper-parameter: fixed in ``__init__``, else chosen by GridSearchCV among
        ``values`` (default: the ``grid`` keyword's); recorded in ``best_params_``."""
        fixed = getattr(self, self.tuned)
        if fixed is not None:
            value, score = fixed, None
        else:
            values = getattr(self, self.grid) if values is None else values
            value, score = choose_by_cv(make, self.search_param, values, X, y, folds=self.cv,
                                        seed=self.random_state, balanced=balanced)
        self.best_params_[self.tuned], self.cv_score_ = value, score
        return value

    def decision_function(self, X) -> np.ndarray:
        """Logits (n, num_classes) float32: the head module's output for features ``X`` (n, d).

        Raises
        ------
        sklearn.exceptions.NotFittedError
            Before :meth:`fit`.
        """
        check_is_fitted(self, "state_")
        return type(self).forward(self.config_, self.state_, np.asarray(X, np.float32))

    def predict_proba(self, X) -> np.ndarray:
        """Softmax of :meth:`decision_function`: (n, num_classes) float32, rows sum to 1."""
        return softmax(self.decision_function(X))

    def predict(self, X) -> np.ndarray:
        """The class index (n,) of the highest logit."""
        scores = self.decision_function(X)  # raises NotFittedError before fit
        return self.classes_[scores.argmax(1)]


def linear_logits(config: dict, state: dict, X: np.ndarray) -> np.ndarray:
    """``LinearHead``: X W^T + b."""
    return X @ state["fc.weight"].T + state["fc.bias"]


class _LinearHead(ClassicalHead):
    """A head that is one linear layer on the raw features (standardisation folded in)."""

    kind = "linear"
    forward = staticmethod(linear_logits)
    tuned, grid, search_param = "C", "Cs", "C"

    def _folded(self, coef, intercept, mean, scale, present, num_classes):  # noqa: PLR0913
        """W (x - m)/s + b == (W/s) x + (b - W m/s): standardisation folded into one FC layer."""
        weight = coef / scale
        bias = intercept - weight @ mean
        self.coef_ = full_class_rows(weight, present, num_classes, 0.0)
        self.intercept_ = full_class_rows(bias, present, num_classes, -1e4)
        config = {"kind": "linear", "in_features": int(len(mean)), "num_classes": int(num_classes)}
        return config, {"fc.weight": self.coef_, "fc.bias": self.intercept_}


class LogRegClassifier(_LinearHead):
    """Multinomial logistic regression on standardised features, as one linear layer.

    Parameters
    ----------
    C : float or None, default None
        Inverse regularisation strength; None chooses it from ``Cs`` by stratified
        ``cv``-fold GridSearchCV on the training set (accuracy; balanced accuracy when
        ``class_weight="balanced"``).
    Cs : sequence of float, default (0.1, 0.3, 1.0)
        The candidates, most regularised first (ties go to the first).
    class_weight : {"balanced", None}, default None
        scikit-learn's weighting: each class weighs n / (k * n_class).
    num_classes : int or None, default None
        Rows of the head; None means ``max(y) + 1``. Classes absent from ``y`` get bias -1e4.
    cv : int, default 3
        Folds of the search (fewer when the smallest class is smaller).
    random_state : int, default 0
        Shuffles the folds.

    Attributes
    ----------
    coef_ : ndarray (num_classes, d) ; intercept_ : ndarray (num_classes,)
        The folded layer: logits = X coef_^T + intercept_ on raw features.
    config_, state_, best_params_, cv_score_, classes_ : see :class:`ClassicalHead`.

    Notes
    -----
    The search fits ``LogisticRegression(max_iter=300)`` per candidate and fold, the final fit
    ``max_iter=1000`` on the whole training set. Two classes become two rows (-f/2, f/2), which
    give scikit-learn's probabilities.
    """

    def __init__(self, C=None, Cs=(0.1, 0.3, 1.0), class_weight=None, num_classes=None, cv=3, random_state=0):  # noqa: PLR0913
        self.C = C
        self.Cs = Cs
        self.class_weight = class_weight
        self.num_classes = num_classes
        self.cv = cv
        self.random_state = random_state

    def _fit_head(self, X, y, num_classes):
        from sklearn.linear_model import LogisticRegression

        mean, scale = feature_scaler(X)
        Z = (X - mean) / scale
        C = self._choose(LogisticRegression(max_iter=300, class_weight=self.class_weight), Z, y,
                         balanced=self.class_weight is not None)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = LogisticRegression(C=C, max_iter=1000, class_weight=self.class_weight).fit(Z, y)
        coef, intercept = model.coef_, model.intercept_
        if len(model.classes_) == 2:
            coef, intercept = binary_as_two_rows(coef.ravel(), intercept[0])
        return self._folded(coef, intercept, mean, scale, model.classes_, num_classes)


def _kernel_svc(head: ClassicalHead, kernel: str, Z, y, **params):
    """C by GridSearchCV over libsvm's one-vs-one SVC (several times faster to cross-validate
    than one-vs-rest), then the one-vs-rest SVCs (one score per class), both on the kernel
    matrix where it fits in memory (:func:`graft.heads.search.gram`). Returns the fitted
    OneVsRestClassifier and the matrix used (None: the features)."""
    from sklearn.svm import SVC

    K = gram(Z, params.get("gamma") if kernel == "rbf" else None)
    use, data = ("precomputed", K) if K is not None else (kernel, Z)
    balanced = head.class_weight is not None
    C = head._choose(SVC(kernel=use, class_weight=head.class_weight, **params), data, y, balanced=balanced)
    return ovr_svc(use, data, y, C=C, class_weight=head.class_weight, **params), K


class LinearSVMClassifier(_LinearHead):
    """One-vs-rest linear SVMs (libsvm) on standardised features, as one linear layer.

    Parameters
    ----------
    C : float or None, default None
        The SVMs' C; None chooses it from ``Cs`` by GridSearchCV (see :class:`LogRegClassifier`).
    Cs : sequence of float, default (0.001, 0.01, 0.1)
    class_weight : {"balanced", None}, default None
    num_classes : int or None, default None
    cv : int, default 3
    random_state : int, default 0

    Attributes
    ----------
    coef_, intercept_ : the folded layer, as :class:`LogRegClassifier`'s.

    Notes
    -----
    libsvm, not liblinear: LinearSVC converges far slower on 1280-d features. Up to
    ``GRAM_MAX_IMAGES`` training images the solver runs on the precomputed kernel matrix
    (the same solution, about 10x faster); each SVM's weight vector is then
    dual_coef @ support vectors, which is its ``coef_``.
    """

    def __init__(self, C=None, Cs=(0.001, 0.01, 0.1), class_weight=None, num_classes=None, cv=3, random_state=0):  # noqa: PLR0913
        self.C = C
        self.Cs = Cs
        self.class_weight = class_weight
        self.num_classes = num_classes
        self.cv = cv
        self.random_state = random_state

    def _fit_head(self, X, y, num_classes):
        mean, scale = feature_scaler(X)
        Z = (X - mean) / scale
        model, K = _kernel_svc(self, "linear", Z, y)
        coef = np.vstack([(est.coef_ if K is None else est.dual_coef_ @ Z[est.support_]).ravel()
                          for est in model.estimators_])
        intercept = np.array([est.intercept_[0] for est in model.estimators_])
        if len(model.classes_) == 2:
            coef, intercept = binary_as_two_rows(coef[0], intercept[0])
        return self._folded(coef, intercept, mean, scale, model.classes_, num_classes)


def rbf_logits(config: dict, state: dict, X: np.ndarray) -> np.ndarray:
    """``RBFSVMHead``: sum_i alpha_ic exp(-gamma |z - s_i|^2) + b_c on standardised unit rows z."""
    Z = standardize_l2(X, state["mean"], state["scale"])
    S = state["support"]
    sq = (Z * Z).sum(1, keepdims=True) - 2 * Z @ S.T + (S * S).sum(1)
    return np.exp(-config["gamma"] * np.maximum(sq, 0)) @ state["dual_coef"] + state["intercept"]


class RBFSVMClassifier(ClassicalHead):
    """One-vs-rest RBF-kernel SVMs (libsvm) on standardised, unit-norm features.

    Parameters
    ----------
    C : float or None, default None
        The SVMs' C; None chooses it from ``Cs`` by GridSearchCV (see :class:`LogRegClassifier`).
    Cs : sequence of float, default (1.0, 10.0, 100.0)
    gamma : float, default 1.0
        Kernel width: unit-norm inputs have squared distances in [0, 4].
    class_weight : {"balanced", None}, default None
    num_classes : int or None, default None
    cv : int, default 3
    random_state : int, default 0

    Attributes
    ----------
    support_vectors_ : ndarray (n_support, d)
        The union of the SVMs' support vectors (standardised, unit rows).
    dual_coef_ : ndarray (n_support, num_classes) ; intercept_ : ndarray (num_classes,)
    """

    kind = "rbf-svm"
    forward = staticmethod(rbf_logits)
    tuned, grid, search_param = "C", "Cs", "C"

    def __init__(self, C=None, Cs=(1.0, 10.0, 100.0), gamma=1.0, class_weight=None, num_classes=None,  # noqa: PLR0913
                 cv=3, random_state=0):
        self.C = C
        self.Cs = Cs
        self.gamma = gamma
        self.class_weight = class_weight
        self.num_classes = num_classes
        self.cv = cv
        self.random_state = random_state

    def _fit_head(self, X, y, num_classes):
        mean, scale = feature_scaler(X)
        Z = standardize_l2(X, mean, scale)
        model, _ = _kernel_svc(self, "rbf", Z, y, gamma=self.gamma)
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
        self.support_vectors_ = Z[support_idx].astype(np.float32)
        self.dual_coef_, self.intercept_ = dual, intercept
        self.best_params_.update(gamma=self.gamma, n_support=int(len(support_idx)))
        config = {"kind": "rbf-svm", "in_features": int(X.shape[1]), "num_classes": int(num_classes),
                  "n_support": int(len(support_idx)), "gamma": self.gamma}
        state = {"mean": mean, "scale": scale, "support": self.support_vectors_, "dual_coef": dual,
                 "intercept": intercept}
        return config, state
