"""The pieces of domain-adversarial training, as small modules (TLlib's split): the gradient
reversal layer with DANN's ramp, the domain discriminator, and the two adversarial losses
(DANN's and CDAN's) built on them. :class:`~graft.methods.alignment.DomainAdversarial` is the
training method that draws the batches and adds the loss to the task's.

DANN: Ganin et al., "Domain-Adversarial Training of Neural Networks", JMLR 2016. CDAN: Long
et al., "Conditional Adversarial Domain Adaptation", NeurIPS 2018.
"""
from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["ConditionalDomainAdversarialLoss", "DomainAdversarialLoss", "DomainDiscriminator", "GradientReversal",
           "GradientReverseLayer", "entropy_weights", "ramp", "reverse_gradient"]


class GradientReversal(torch.autograd.Function):
    """Identity forward; the gradient multiplied by ``-weight`` backward."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: float) -> torch.Tensor:
        ctx.weight = weight
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return -ctx.weight * grad, None


def reverse_gradient(x: torch.Tensor, weight: float = 1.0) -> torch.Tensor:
    return GradientReversal.apply(x, weight)


def ramp(progress: float, gamma: float = 10.0) -> float:
    """DANN's reversal-weight ramp: 0 at the start of training, toward 1 at the end."""
    return 2.0 / (1.0 + math.exp(-gamma * min(max(progress, 0.0), 1.0))) - 1.0


class GradientReverseLayer(nn.Module):
    """Identity forward ``[B, ...] -> [B, ...]``; backward, the gradient times ``-weight``,
    ``weight = max_weight * ramp(steps / total_steps)`` (DANN's schedule: 0 at the start,
    toward ``max_weight`` at the end). :meth:`advance` counts a training step; the count is
    the only state (checkpointed by the method that owns the layer)."""

    def __init__(self, max_weight: float = 1.0, total_steps: int = 1):
        super().__init__()
        self.max_weight, self.total_steps, self.steps = max_weight, max(1, total_steps), 0

    @property
    def weight(self) -> float:
        return self.max_weight * ramp(self.steps / self.total_steps)

    def advance(self) -> None:
        self.steps += 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return reverse_gradient(x, self.weight)


class DomainDiscriminator(nn.Sequential):
    """features -> one logit, "this came from the source domain"."""

    def __init__(self, in_features: int, hidden: int = 1024):
        super().__init__(nn.Linear(in_features, hidden), nn.BatchNorm1d(hidden), nn.ReLU(),
                         nn.Linear(hidden, hidden), nn.BatchNorm1d(hidden), nn.ReLU(),
                         nn.Linear(hidden, 1))


class DomainAdversarialLoss(nn.Module):
    """DANN's adversarial loss: ``discriminator(grl(features))`` against the domain labels
    (the first ``n_source`` rows of ``features [B, D]`` are the source, 1; the rest the
    target, 0), binary cross-entropy, optionally weighted per example (``weights [B]``).
    Returns ``(loss, domain accuracy in [0, 1])``; the reversal makes the loss that sharpens
    the discriminator push the network toward features it cannot tell apart."""

    def __init__(self, discriminator: nn.Module, grl: GradientReverseLayer):
        super().__init__()
        self.discriminator, self.grl = discriminator, grl

    def forward(self, features: torch.Tensor, n_source: int,
                weights: torch.Tensor | None = None) -> tuple[torch.Tensor, float]:
        domain_logits = self.discriminator(self.grl(features)).squeeze(1)
        domains = torch.cat([torch.ones(n_source), torch.zeros(len(features) - n_source)])
        loss = F.binary_cross_entropy_with_logits(domain_logits, domains, weight=weights)
        return loss, float(((domain_logits > 0).float() == domains).float().mean())


class ConditionalDomainAdversarialLoss(DomainAdversarialLoss):
    """CDAN+E: the discriminator sees the outer product of ``features [B, D]`` and the
    classifier's (detached) softmax over ``logits [B, C]`` (its input is ``D x C`` wide), so
    it aligns class-conditional distributions; each example's loss is weighted by the
    certainty of its prediction (:func:`entropy_weights`). Returns ``(loss, domain accuracy)``."""

    def forward(self, features: torch.Tensor, logits: torch.Tensor, n_source: int) -> tuple[torch.Tensor, float]:
        probabilities = torch.softmax(logits, dim=1).detach()
        conditioned = torch.bmm(probabilities.unsqueeze(2), features.unsqueeze(1)).flatten(1)
        return super().forward(conditioned, n_source, entropy_weights(probabilities, n_source))


def entropy_weights(probabilities: torch.Tensor, n_source: int) -> torch.Tensor:
    """CDAN+E's entropy conditioning (Long et al. 2018, eq. 7): each example's domain loss is
    weighted by ``1 + exp(-H(p))``, so confident predictions count more than uncertain ones,
    normalised so each domain weighs the same in all (as the paper's code), the mean weight 1.
    ``probabilities``: ``[source + target, classes]``, detached. Returns ``[source + target]``."""
    entropy = -(probabilities * torch.log(probabilities + 1e-5)).sum(1)
    weights = 1.0 + torch.exp(-entropy)
    source, target = weights[:n_source], weights[n_source:]
    both = torch.cat([source / source.sum(), target / target.sum()])
    return both * len(weights) / 2
