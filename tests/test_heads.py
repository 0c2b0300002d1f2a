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
