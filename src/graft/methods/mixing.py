"""Batch-level MixUp and CutMix with soft targets.

MixUp (Zhang, Cisse, Dauphin & Lopez-Paz, "mixup: Beyond Empirical Risk Minimization",
ICLR 2018) blends whole images; CutMix (Yun, Han, Oh, Chun, Choe & Yoo, "CutMix:
Regularization Strategy to Train Strong Classifiers with Localizable Features", ICCV 2019)
pastes a rectangle of one image onto another. Both pair each sample with the batch in
reverse order and mix the labels with the same weight.

All randomness comes from torch's global (default) generator -- no numpy, no ``random`` --
because graft checkpoints torch's RNG state: a resumed run then draws exactly the same
mixing weights and boxes as an uninterrupted one.
"""
from __future__ import annotations

import math

import torch
from torch.nn import functional as F

from graft.errors import GraftError

__all__ = ["BatchMixer", "MixingError", "soft_target_cross_entropy"]


class MixingError(GraftError, ValueError):
    """Invalid mixing options. A ``ValueError`` for library callers, and a ``GraftError``
    so the CLI prints it as a one-line message."""


def soft_target_cross_entropy(logits: torch.Tensor, soft_targets: torch.Tensor,
                              class_weights: torch.Tensor | None = None) -> torch.Tensor:
    """Cross-entropy against a distribution over classes, averaged over the batch:

        L = mean_i ( - sum_c t_ic * log softmax(z_i)_c )

    Equal to ``F.cross_entropy`` when each row of ``soft_targets`` is one-hot. With
    ``class_weights`` each sample counts ``sum_c t_ic w_c`` and the mean is over those
    weights, which is ``F.cross_entropy(weight=w)`` for one-hot rows.
    """
    per_sample = -(soft_targets * F.log_softmax(logits, dim=-1)).sum(dim=-1)
    if class_weights is None:
        return per_sample.mean()
    sample_weights = soft_targets @ class_weights
    return (sample_weights * per_sample).sum() / sample_weights.sum()


def _sample_beta(alpha: float) -> float:
    """lam ~ Beta(alpha, alpha), drawn with torch's default generator."""
    concentration = torch.tensor(float(alpha))
    return float(torch.distributions.Beta(concentration, concentration).sample())


class BatchMixer:
    """Mix a batch with its reverse (``x.flip(0)``) and return soft targets.

    With ``y' = y.flip(0)`` and smoothed one-hots ``e(y) = (1 - s) * onehot(y) + s / C``
    (``s = label_smoothing``, ``C = num_classes``):

    * MixUp:  ``x~ = lam * x + (1 - lam) * x'``, ``lam ~ Beta(mixup_alpha, mixup_alpha)``;
    * CutMix: ``x~ = x`` with a box pasted from ``x'``. The box has area fraction ``1 - lam``
      (``lam ~ Beta(cutmix_alpha, cutmix_alpha)``), the same aspect ratio as the image, a
      centre uniform over the image, and is clipped to the image; ``lam`` is then recomputed
      as ``1 - box_area / (H * W)`` so the labels match the pixels actually pasted.

    Targets: ``t = lam * e(y) + (1 - lam) * e(y')``. When both alphas are > 0, each batch uses
    CutMix with probability ``switch_prob``, MixUp otherwise. When both are 0 the images come
    back unchanged with ``e(y)`` as targets. After each call ``last_mode`` ("mixup", "cutmix"
    or "none") and ``last_lam`` say what was done (handy for logging).
    """

    def __init__(self, num_classes: int, mixup_alpha: float = 0.0, cutmix_alpha: float = 0.0,
                 switch_prob: float = 0.5, label_smoothing: float = 0.0):
        if num_classes < 1:
            raise MixingError(f"num_classes must be >= 1, got {num_classes}")
        if mixup_alpha < 0:
            raise MixingError(f"mixup_alpha must be >= 0 (0 disables MixUp), got {mixup_alpha}")
        if cutmix_alpha < 0:
            raise MixingError(f"cutmix_alpha must be >= 0 (0 disables CutMix), got {cutmix_alpha}")
        if not 0.0 <= switch_prob <= 1.0:
            raise MixingError(f"switch_prob must be in [0, 1], got {switch_prob}")
        if not 0.0 <= label_smoothing < 1.0:
            raise MixingError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
        self.num_classes = int(num_classes)
        self.mixup_alpha, self.cutmix_alpha = float(mixup_alpha), float(cutmix_alpha)
        self.switch_prob, self.label_smoothing = float(switch_prob), float(label_smoothing)
        self.last_mode, self.last_lam = "none", 1.0

    @property
    def enabled(self) -> bool:
        return self.mixup_alpha > 0 or self.cutmix_alpha > 0

    def _one_hot(self, targets: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        hot = F.one_hot(targets.long(), self.num_classes).to(dtype)
        s = self.label_smoothing
        return hot * (1.0 - s) + s / self.num_classes if s > 0 else hot

    def _choose_mode(self) -> str:
        if self.mixup_alpha > 0 and self.cutmix_alpha > 0:
            # Draw even when switch_prob is 0 or 1 so the RNG stream does not depend on it.
            return "cutmix" if float(torch.rand(())) < self.switch_prob else "mixup"
        return "cutmix" if self.cutmix_alpha > 0 else "mixup"

    @staticmethod
    def _cutmix_box(lam: float, height: int, width: int) -> tuple[int, int, int, int]:
        """(y1, y2, x1, x2) of a box of area ~(1 - lam) * H * W, centre uniform, clipped."""
        ratio = math.sqrt(1.0 - lam)
        cut_h, cut_w = int(height * ratio), int(width * ratio)
        cy = int(torch.randint(0, height, ()))
        cx = int(torch.randint(0, width, ()))
        y1, y2 = max(cy - cut_h // 2, 0), min(cy + cut_h - cut_h // 2, height)
        x1, x2 = max(cx - cut_w // 2, 0), min(cx + cut_w - cut_w // 2, width)
        return y1, y2, x1, x2

    def __call__(self, images: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if targets.ndim != 1 or images.shape[0] != targets.shape[0]:
            raise MixingError(
                f"expected images [B, ...] and targets [B]; got {tuple(images.shape)} and {tuple(targets.shape)}")
        dtype = images.dtype if images.is_floating_point() else torch.float32
        onehot = self._one_hot(targets, dtype)
        if not self.enabled:
            self.last_mode, self.last_lam = "none", 1.0
            return images, onehot

        mode = self._choose_mode()
        lam = _sample_beta(self.cutmix_alpha if mode == "cutmix" else self.mixup_alpha)
        partner = images.flip(0)
        if mode == "cutmix":
            if images.ndim != 4:
                raise MixingError(f"CutMix needs images of shape [B, C, H, W], got {tuple(images.shape)}")
            height, width = images.shape[-2:]
            y1, y2, x1, x2 = self._cutmix_box(lam, height, width)
            mixed = images.clone()  # never modify the caller's batch in place
            mixed[:, :, y1:y2, x1:x2] = partner[:, :, y1:y2, x1:x2]
            # The clipped box can be smaller than asked: label by the pixels actually pasted.
            lam = 1.0 - (y2 - y1) * (x2 - x1) / float(height * width)
        else:
            mixed = images * lam + partner * (1.0 - lam)
        self.last_mode, self.last_lam = mode, lam
        soft = onehot * lam + onehot.flip(0) * (1.0 - lam)
        return mixed, soft
