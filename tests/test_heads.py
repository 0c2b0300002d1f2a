"""Classical heads: each fits, its torch module reproduces it, and it survives a rebuild."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from graft import CLASSICAL_HEADS, FeatureExtractor, build_head, fit_head, scan_folder


@pytest.fixture(scope="module")
def digit_features(lite0, digits_dir):
    folder = scan_folder(digits_dir)
    result = FeatureExtractor(lite0, image_size=96).fit().extract_folder(folder)
    X, y = result.vectors, result.labels
    return X[::2], y[::2], X[1::2], y[1::2]


def _predict(module, X):
    with torch.inference_mode():
        return module(torch.from_numpy(X)).argmax(1).numpy()


@pytest.mark.parametrize("name", sorted(CLASSICAL_HEADS))
def test_every_head_learns_and_round_trips(name, digit_features):
    Xtr, ytr, Xva, yva = digit_features
    fitted = fit_head(name, Xtr, ytr, num_classes=10)
    assert (_predict(fitted.module, Xtr) == ytr).mean() >= 0.9 or name == "knn"
    assert (_predict(fitted.module, Xva) == yva).mean() > 0.5
    rebuilt = build_head(fitted.module.config())
    rebuilt.load_state_dict(fitted.module.state_dict())
    np.testing.assert_array_equal(_predict(rebuilt, Xva), _predict(fitted.module, Xva))


@pytest.mark.parametrize("name", sorted(CLASSICAL_HEADS))
def test_numpy_and_torch_forward_agree(name, digit_features):
    """A fit on cached features scores in numpy; the saved torch head must say the same."""
    Xtr, ytr, Xva, _ = digit_features
    fitted = fit_head(name, Xtr, ytr, num_classes=10)
    with torch.inference_mode():
        torch_logits = fitted.module(torch.from_numpy(Xva)).numpy()
    np.testing.assert_allclose(fitted.logits(Xva), torch_logits, rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(fitted.probabilities(Xva).argmax(1), torch_logits.argmax(1))


def test_logreg_head_is_sklearn_folded_into_one_linear_layer(digit_features):
    from sklearn.linear_model import LogisticRegression

    from graft.heads.classical import feature_scaler

    Xtr, ytr, Xva, _ = digit_features
    fitted = fit_head("logreg", Xtr, ytr, num_classes=10)
    assert isinstance(fitted.module.fc, torch.nn.Linear)

    mean, scale = feature_scaler(Xtr)  # the same standardisation graft fits on, then sklearn itself
    reference = LogisticRegression(C=fitted.params["C"], max_iter=1000).fit((Xtr - mean) / scale, ytr)
    with torch.inference_mode():
        ours = torch.softmax(fitted.module(torch.from_numpy(Xva)), 1).numpy()
    np.testing.assert_allclose(ours, reference.predict_proba((Xva - mean) / scale), atol=1e-3)


def test_rbf_svm_head_matches_sklearn_decisions(digit_features):
    from sklearn.multiclass import OneVsRestClassifier
    from sklearn.svm import SVC

    Xtr, ytr, Xva, _ = digit_features
    fitted = fit_head("rbf-svm", Xtr, ytr, num_classes=10)
    mean, scale = Xtr.mean(0), Xtr.std(0)
    scale = np.maximum(scale, 0.1 * np.median(scale))

    def prep(X):
        Z = (X - mean) / scale
        return Z / np.linalg.norm(Z, axis=1, keepdims=True)

    reference = OneVsRestClassifier(SVC(kernel="rbf", gamma=1.0, C=fitted.params["C"])).fit(prep(Xtr), ytr)
    with torch.inference_mode():
        ours = fitted.module(torch.from_numpy(Xva)).numpy()
    np.testing.assert_allclose(ours, reference.decision_function(prep(Xva)), atol=1e-3)


def test_linear_svm_head_matches_sklearn_decisions(digit_features):
    """graft solves on the precomputed kernel matrix (issue 30, item 21): the head must still be
    sklearn's one-vs-rest linear SVC on the features, folded into one linear layer."""
    from sklearn.multiclass import OneVsRestClassifier
    from sklearn.svm import SVC

    from graft.heads.classical import feature_scaler

    Xtr, ytr, Xva, _ = digit_features
    fitted = fit_head("linear-svm", Xtr, ytr, num_classes=10)
    mean, scale = feature_scaler(Xtr)
    reference = OneVsRestClassifier(SVC(kernel="linear", C=fitted.params["C"])).fit((Xtr - mean) / scale, ytr)
    with torch.inference_mode():
        ours = fitted.module(torch.from_numpy(Xva)).numpy()
    np.testing.assert_allclose(ours, reference.decision_function((Xva - mean) / scale), atol=1e-3)


def test_head_for_a_class_missing_from_training_never_predicts_it(digit_features):
    Xtr, ytr, Xva, _ = digit_features
    keep = ytr != 3
    fitted = fit_head("logreg", Xtr[keep], ytr[keep], num_classes=10)
    assert 3 not in set(_predict(fitted.module, Xva))


def test_two_class_heads(digit_features):
    Xtr, ytr, Xva, yva = digit_features
    tr, va = np.isin(ytr, [0, 1]), np.isin(yva, [0, 1])
    for name in ("logreg", "linear-svm", "rbf-svm"):
        fitted = fit_head(name, Xtr[tr], ytr[tr], num_classes=2)
        assert (_predict(fitted.module, Xva[va]) == yva[va]).mean() >= 0.9, name


def test_unknown_head_is_a_clear_error(digit_features):
    from graft.errors import GraftError

    with pytest.raises(GraftError, match="unknown head 'forest'"):
        fit_head("forest", *digit_features[:2], num_classes=10)


# -- the heads as scikit-learn estimators, registered once (issue 26) -----------------------------
def test_the_registry_lists_every_head_once():
    from sklearn.base import ClassifierMixin

    from graft import HEAD_MODULES
    from graft.heads.registry import HEAD_NAMES, HEADS, register_head
    from graft.recipes.settings import FrozenFitConfig

    assert HEAD_NAMES == tuple(HEADS) == ("logreg", "linear-svm", "rbf-svm", "knn", "prototype")
    assert CLASSICAL_HEADS is HEADS  # the older public name is the registry, not a second list
    classes = [HEADS[name].load() for name in HEAD_NAMES]
    assert len(set(classes)) == len(classes) and all(issubclass(c, ClassifierMixin) for c in classes)
    assert {c.kind for c in classes} <= set(HEAD_MODULES)  # each saves as a torch module graft rebuilds
    with pytest.raises(ValueError, match="already registered"):
        register_head("knn", "graft.heads.neighbours:KNNClassifier", "again")
    assert FrozenFitConfig(train_dir="x", head="prototype").head == "prototype"  # graft fit's choices: the registry


@pytest.mark.parametrize("name", ["logreg", "linear-svm", "rbf-svm", "knn", "prototype"])
def test_head_estimators_follow_sklearns_rules(name, digit_features):
    from sklearn.base import clone
    from sklearn.exceptions import NotFittedError
    from sklearn.utils.validation import check_is_fitted

    from graft.heads.registry import head_estimator

    Xtr, ytr, Xva, _ = digit_features
    unfitted = head_estimator(name, num_classes=10)
    with pytest.raises(NotFittedError):
        unfitted.predict(Xva)
    with pytest.raises(NotFittedError):
        check_is_fitted(unfitted)
    fitted = unfitted.fit(Xtr, ytr)
    assert fitted is unfitted  # fit returns self
    check_is_fitted(fitted)
    copy = clone(fitted)
    assert copy.get_params() == fitted.get_params()
    with pytest.raises(NotFittedError):  # clone copies the hyper-parameters, not what was learned
        copy.decision_function(Xva)
    copy.fit(Xtr, ytr)
    np.testing.assert_array_equal(copy.decision_function(Xva), fitted.decision_function(Xva))
    assert copy.best_params_ == fitted.best_params_
    probabilities = fitted.predict_proba(Xva)
    assert probabilities.shape == (len(Xva), 10)
    np.testing.assert_allclose(probabilities.sum(1), 1, atol=1e-5)
    np.testing.assert_array_equal(fitted.predict(Xva), probabilities.argmax(1))
    # fit_head is the estimator under its registered name
    head = fit_head(name, Xtr, ytr, num_classes=10)
    assert head.params == fitted.best_params_
    np.testing.assert_allclose(head.logits(Xva), fitted.decision_function(Xva), rtol=1e-6, atol=1e-6)


def test_fixed_hyper_parameter_skips_the_search_and_sklearn_can_cross_validate_a_head(digit_features):
    from sklearn.model_selection import GridSearchCV

    from graft.heads.registry import head_estimator

    Xtr, ytr, Xva, yva = digit_features
    searched = head_estimator("logreg", num_classes=10).fit(Xtr, ytr)
    assert searched.cv_score_ is not None and searched.best_params_["C"] in searched.Cs
    fixed = head_estimator("logreg", C=searched.best_params_["C"], num_classes=10).fit(Xtr, ytr)
    assert fixed.cv_score_ is None
    np.testing.assert_allclose(fixed.decision_function(Xva), searched.decision_function(Xva), atol=1e-6)
    # an estimator scikit-learn's own tools take: a grid search over the head's k
    grid = GridSearchCV(head_estimator("knn", num_classes=10), {"k": [1, 3]}, cv=3).fit(Xtr, ytr)
    assert grid.best_params_["k"] in (1, 3) and grid.score(Xva, yva) > 0.5
