"""Conservation training: drop-in losses that keep a fine-tuned network near its source model.

Each is a small ``nn.Module``; add its value to the task loss. :func:`conservation_term`
builds the one a run's settings name, wired to its network.
"""
from __future__ import annotations

import copy

import torch
from torch import nn
from torch.nn import functional as F

from graft.defaults import REGULARIZERS
from graft.errors import GraftError


class L2SP(nn.Module):
    """L2-SP (Li, Grandvalet & Davoine, "Explicit Inductive Bias for Transfer Learning with
    Convolutional Networks", ICML 2018):

        Omega(w) = alpha/2 * ||w_S - w_S^0||^2 + beta/2 * ||w_new||^2

    ``w_S`` are the parameters shared with the source model, pulled toward their pretrained
    values ``w_S^0`` (not toward zero, as plain weight decay would); ``w_new`` are the new
    parameters (the head), with ordinary L2.
    """

    def __init__(self, shared: dict[str, nn.Parameter], new: list[nn.Parameter] | None = None,
                 alpha: float = 0.01, beta: float = 0.01):
        super().__init__()
        self.alpha, self.beta = alpha, beta
        self.shared = dict(shared)
        self.new = list(new or [])
        self.source = {k: p.detach().clone() for k, p in self.shared.items()}

    def forward(self) -> torch.Tensor:
        first = next(iter(self.shared.values()), None)
        total = torch.zeros((), device=first.device if first is not None else "cpu")
        for name, p in self.shared.items():
            if p.requires_grad:  # frozen layers cannot move: no need to pay for them
                total = total + 0.5 * self.alpha * (p - self.source[name]).pow(2).sum()
        for p in self.new:
            total = total + 0.5 * self.beta * p.pow(2).sum()
        return total


class LwFDistillation(nn.Module):
    """Learning without Forgetting (Li & Hoiem, ECCV 2016 / TPAMI 2018): keep the source
    model's outputs on the *target* images. With ``z`` the current network's outputs through
    the original (source) head and ``z0`` the frozen source model's outputs on the same images,

        L_old = T^2 * KL( softmax(z0 / T) || softmax(z / T) )

    (the distillation form of Hinton et al., 2015; zero when the network is unchanged).
    """

    def __init__(self, temperature: float = 2.0):
        super().__init__()
        self.temperature = temperature

    def forward(self, logits: torch.Tensor, source_logits: torch.Tensor) -> torch.Tensor:
        t = self.temperature
        target = F.log_softmax(source_logits.detach() / t, dim=1)
        current = F.log_softmax(logits / t, dim=1)
        return (t * t) * F.kl_div(current, target, reduction="batchmean", log_target=True)


class BatchSpectralShrinkage(nn.Module):
    """Batch Spectral Shrinkage, BSS (Chen, Wang, Fu, Long & Wang, "Catastrophic Forgetting
    Meets Negative Transfer: Batch Spectral Shrinkage for Safe Transfer Learning", NeurIPS
    2019). With ``F`` the ``batch x dim`` matrix of features of one mini-batch and
    ``sigma_1 >= sigma_2 >= ... >= sigma_b`` its singular values (``b = min(batch, dim)``),

        L_bss(F) = eta * sum_{i=1..k} sigma_{b+1-i}^2

    i.e. ``eta`` times the sum of the squares of the ``k`` smallest singular values. The
    paper finds that the spectral components with small singular values are the ones that
    carry source knowledge that does not transfer (negative transfer); shrinking them lets
    fine-tuning keep the dominant, transferable directions. ``k`` is clamped to ``b``.
    """

    def __init__(self, k: int = 1, eta: float = 1e-3):
        super().__init__()
        if k < 1:
            raise ValueError(f"BatchSpectralShrinkage: k must be >= 1, got {k}")
        if eta < 0:
            raise ValueError(f"BatchSpectralShrinkage: eta must be >= 0, got {eta}")
        self.k, self.eta = int(k), float(eta)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        if features.ndim != 2:
            raise ValueError(
                f"BatchSpectralShrinkage expects features of shape [batch, dim], got {tuple(features.shape)}")
        # SVD is not implemented for half precision: compute in at least float32.
        if features.dtype in (torch.float16, torch.bfloat16):
            features = features.float()
        # svdvals (unlike svd) has a gradient that stays finite when singular values repeat.
        sigma = torch.linalg.svdvals(features)  # descending order
        k = min(self.k, sigma.numel())
        return self.eta * sigma[sigma.numel() - k:].pow(2).sum()


def conservation_term(kind: str | None, weight: float, source_model: nn.Module | None, features: nn.Module | None,
                      head: nn.Module):
    """The conservation loss ``(images [B, 3, H, W], logits [B, classes]) -> scalar`` a
    :class:`~graft.methods.supervised.Supervised` method adds to its task loss, or None
    for ``kind`` None.

    - ``l2sp``: :class:`L2SP` over ``features.trunk``'s parameters and the ``head``'s, both
      weighted ``weight``;
    - ``lwf``: ``weight`` x :class:`LwFDistillation` between a frozen copy of ``source_model``
      (the pretrained network with its own classifier) and the current features through that
      classifier; it runs on the images themselves (``Supervised(needs_images=True)``);
    - ``bss``: :class:`BatchSpectralShrinkage` (``eta = weight``) of the features the ``head``
      receives, recorded by a forward pre-hook on every pass.

    Raises :class:`~graft.errors.GraftError` for another ``kind``.
    """
    if kind is None:
        return None
    if kind == "l2sp":
        penalty = L2SP(dict(features.trunk.named_parameters()), list(head.parameters()), alpha=weight, beta=weight)
        return lambda images, logits: penalty()
    if kind == "lwf":
        source = copy.deepcopy(source_model).eval()
        for p in source.parameters():
            p.requires_grad_(False)
        old_head = source.get_classifier()
        distill = LwFDistillation()

        def lwf(images, logits):
            with torch.no_grad():
                source_logits = source(images)
            return weight * distill(old_head(features(images)), source_logits)

        return lwf
    if kind == "bss":
        shrink = BatchSpectralShrinkage(k=1, eta=weight)
        seen = {}
        head.register_forward_pre_hook(lambda module, inputs: seen.__setitem__("features", inputs[0]))
        return lambda images, logits: shrink(seen["features"])
    raise GraftError(f"unknown regularizer {kind!r}: use {', '.join(REGULARIZERS[:-1])} or {REGULARIZERS[-1]}")
