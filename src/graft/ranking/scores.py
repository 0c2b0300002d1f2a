"""How well will features (or a source model) transfer to a labelled target? Two scores that
need no training, only one pass of the frozen network (numpy only).

* :func:`logme` -- LogME (You et al., ICML 2021): the log marginal likelihood (evidence) of a
  Bayesian linear model from features to one-hot labels, per image, averaged over classes, with
  the prior and noise precisions set by evidence maximisation. Higher is better; comparable
  across feature extractors on the same labels.
* :func:`leep` -- LEEP (Nguyen et al., ICML 2020): the log of the expected empirical
  prediction, from the source model's softmax over its own classes. Higher is better; it is
  at most 0, and -log(classes) is chance.
"""
from __future__ import annotations

import numpy as np


def evidence_fixed_point(s2: np.ndarray, z: np.ndarray, y_norm2: float, n: int, d: int,
                          iterations: int = 100, tol: float = 1e-5) -> tuple[float, float, float]:
    """(evidence / n, alpha, beta) of y = F w + e, w ~ N(0, 1/alpha), e ~ N(0, 1/beta), given the
    squared singular values ``s2`` of F and the projection ``z = U^T y`` of y on F's left
    singular vectors (MacKay's updates, written in the SVD basis)."""
    alpha, beta = 1.0, 1.0
    for _ in range(iterations):
        gamma = float((beta * s2 / (alpha + beta * s2)).sum())
        m2 = float((beta ** 2 * s2 * z ** 2 / (alpha + beta * s2) ** 2).sum())  # |m|^2
        residual = float(((z * alpha / (alpha + beta * s2)) ** 2).sum()) + (y_norm2 - float(z @ z))
        new_alpha = gamma / max(m2, 1e-12)
        new_beta = (n - gamma) / max(residual, 1e-12)
        done = abs(new_alpha - alpha) / alpha < tol and abs(new_beta - beta) / beta < tol
        alpha, beta = new_alpha, new_beta
        if done:
            break
    m2 = float((beta ** 2 * s2 * z ** 2 / (alpha + beta * s2) ** 2).sum())
    residual = float(((z * alpha / (alpha + beta * s2)) ** 2).sum()) + (y_norm2 - float(z @ z))
    log_det = float(np.log(alpha + beta * s2).sum()) + (d - len(s2)) * np.log(alpha)
    evidence = (n * np.log(beta) + d * np.log(alpha) - n * np.log(2 * np.pi) - beta * residual - alpha * m2
                - log_det) / 2
    return evidence / n, alpha, beta


def logme(features: np.ndarray, labels: np.ndarray) -> float:
    """LogME of ``features`` (n x d) for integer ``labels``: mean over classes of the per-image
    evidence of a one-vs-rest Bayesian linear regression. One SVD serves every class."""
    F = np.asarray(features, dtype=np.float64)
    labels = np.asarray(labels)
    n, d = F.shape
    U, s, _ = np.linalg.svd(F, full_matrices=False)
    keep = s > s.max() * 1e-10 if s.size else s > 0
    U, s2 = U[:, keep], s[keep] ** 2
    scores = []
    for c in np.unique(labels):
        y = (labels == c).astype(np.float64)
        z = U.T @ y
        scores.append(evidence_fixed_point(s2, z, float(y @ y), n, d)[0])
    return float(np.mean(scores))


def leep(source_probabilities: np.ndarray, labels: np.ndarray) -> float:
    """LEEP from the source model's softmax (n x source classes) on the target images."""
    theta = np.asarray(source_probabilities, dtype=np.float64)
    labels = np.asarray(labels)
    classes = np.unique(labels)
    n = len(labels)
    joint = np.stack([theta[labels == c].sum(0) for c in classes]) / n  # P(y, z): target x source
    conditional = joint / np.maximum(joint.sum(0, keepdims=True), 1e-300)  # P(y | z)
    index = np.searchsorted(classes, labels)
    expected = (theta * conditional[index]).sum(1)  # sum_z P(y_i | z) theta_z(x_i)
    return float(np.log(np.maximum(expected, 1e-300)).mean())
