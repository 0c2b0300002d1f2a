"""Domain-adversarial training for an unlabelled target domain.

DANN (Ganin et al., "Domain-Adversarial Training of Neural Networks", JMLR 2016): a domain
discriminator learns to tell source features from target features; between it and the
network sits a gradient reversal layer, so the same gradient that sharpens the discriminator
pushes the network toward features it cannot tell apart. The reversal weight ramps from 0 to
its maximum as ``2 / (1 + exp(-10 p)) - 1`` over training progress ``p``.

CDAN (Long et al., "Conditional Adversarial Domain Adaptation", NeurIPS 2018) conditions the
discriminator on the classifier's predictions: it sees the outer product of the features and
the softmax, so it aligns class-conditional distributions rather than the marginals; each
example's domain loss is weighted by the certainty of its prediction (CDAN+E, the paper's
entropy conditioning), so uncertain target predictions steer the alignment less.

The reversal layer, the discriminator and the two losses are small modules of their own
(:mod:`graft.methods.adversarial`); :class:`DomainAdversarial` draws the batches and adds
the chosen loss to the task's.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from graft.defaults import ADVERSARIES
from graft.methods.adversarial import (
    ConditionalDomainAdversarialLoss,
    DomainAdversarialLoss,
    DomainDiscriminator,
    GradientReversal,
    GradientReverseLayer,
    entropy_weights,
    ramp,
    reverse_gradient,
)
from graft.methods.base import StepOutput, TrainingMethod

__all__ = ["ADVERSARIES", "DomainAdversarial", "DomainDiscriminator", "GradientReversal", "entropy_weights",
           "proxy_a_distance", "ramp", "reverse_gradient"]


class _Cycled:
    """Endless batches of a loader, restarting (and reshuffling) it whenever it runs out."""

    def __init__(self, loader):
        self.loader, self.iterator = loader, iter(loader)

    def __next__(self):
        try:
            return next(self.iterator)
        except StopIteration:
            self.iterator = iter(self.loader)
            return next(self.iterator)


class DomainAdversarial(TrainingMethod):
    """Labelled source batches zipped with unlabelled target batches (the target cycled when
    it is the shorter); the task loss on the source, the adversarial loss on both.

    ``adversary``: ``dann``, ``cdan`` or ``none``: source-only, the baseline one flag away,
    where the target never enters the network. (With an adversary, source and target go
    through the network as one batch, so BatchNorm's statistics are shared between the
    domains; that alone adapts a network somewhat (AdaBN, Li et al. 2016) and is part of what
    DANN gains over source-only.) The discriminator reads the head's input features.
    ``target_generator`` shuffles the target loader; its state is checkpointed.
    """

    needs_images = True

    def __init__(self, target_loader, feature_dim: int, num_classes: int, adversary: str = "dann",
                 max_weight: float = 1.0, hidden: int = 1024, target_generator: torch.Generator | None = None,
                 target_val_loader=None):
        if adversary not in ADVERSARIES:
            raise ValueError(f"unknown adversary {adversary!r}: {', '.join(ADVERSARIES)}")
        self.name = adversary if adversary != "none" else "source-only"
        self.adversary, self.max_weight = adversary, max_weight
        self.target_loader, self.target_generator = target_loader, target_generator
        self.target_val_loader = target_val_loader
        self.num_classes = num_classes
        width = feature_dim * num_classes if adversary == "cdan" else feature_dim
        self.discriminator = DomainDiscriminator(width, hidden) if adversary != "none" else None
        self.grl = GradientReverseLayer(max_weight)  # the ramp's state: the steps taken
        loss = ConditionalDomainAdversarialLoss if adversary == "cdan" else DomainAdversarialLoss
        self.adversarial_loss = loss(self.discriminator, self.grl) if self.discriminator is not None else None
        self._features = None

    @property
    def step(self) -> int:
        return self.grl.steps

    def setup(self, model, trunk, head, total_steps: int) -> None:
        self.grl.total_steps = max(1, total_steps)

        def keep_features(_module, inputs):
            self._features = inputs[0]

        head.register_forward_pre_hook(keep_features)

    def modules(self) -> dict[str, nn.Module]:
        return {"discriminator": self.discriminator} if self.discriminator is not None else {}

    def batches(self, loader, epoch: int):
        if self.discriminator is None:  # source-only: no target image is loaded or seen
            for source in loader:
                yield source, None
            return
        target = _Cycled(self.target_loader)
        for source in loader:
            yield source, next(target)

    def weight(self) -> float:
        return self.grl.weight

    def training_step(self, forward, batch, augmented: bool) -> StepOutput:
        (source_images, labels), target = batch
        n_source = len(labels)
        self.grl.advance()
        if self.discriminator is None:
            logits = forward(source_images)
            return StepOutput(F.cross_entropy(logits, labels), n_source, int((logits.argmax(1) == labels).sum()),
                              labels=labels)
        logits = forward(torch.cat([source_images, target[0]]))
        task_loss = F.cross_entropy(logits[:n_source], labels)
        correct = int((logits[:n_source].argmax(1) == labels).sum())
        weight = self.grl.weight
        if self.adversary == "cdan":  # conditioned on the predictions: features x softmax
            domain_loss, domain_correct = self.adversarial_loss(self._features, logits, n_source)
        else:
            domain_loss, domain_correct = self.adversarial_loss(self._features, n_source)
        # logs are summed per labelled example and averaged over the epoch by the engine
        return StepOutput(task_loss + domain_loss, n_source, correct,
                          {"domain_loss": domain_loss.item() * n_source,
                           "domain_accuracy": domain_correct * n_source, "adversary_weight": weight * n_source},
                          labels=labels)

    def evaluate(self, evaluated, val_loader) -> tuple[float, float, dict]:
        from graft.methods.base import evaluate_loader

        loss, accuracy, _, _ = evaluate_loader(evaluated, val_loader)
        logs = {}
        if self.target_val_loader is not None:  # reported, never used to choose or stop
            _, logs["target_val_accuracy"], _, _ = evaluate_loader(evaluated, self.target_val_loader)
        return loss, accuracy, logs

    def state_dict(self) -> dict:
        state = super().state_dict()
        state["step"] = torch.tensor(self.grl.steps)
        if self.target_generator is not None:
            state["target_rng"] = self.target_generator.get_state()
        return state

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict({k: v for k, v in state.items() if k not in ("step", "target_rng")})
        self.grl.steps = int(state["step"])
        if self.target_generator is not None and "target_rng" in state:
            self.target_generator.set_state(state["target_rng"])


def proxy_a_distance(source, target, seed: int = 0) -> float:
    """Proxy A-distance (Ben-David et al. 2007): 2 (1 - 2 err), err the held-out error of a
    linear classifier telling source from target features (equal numbers of each). 0: the
    domains are indistinguishable; 2: perfectly separable."""
    import numpy as np
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(seed)
    n = min(len(source), len(target))
    x = np.concatenate([source[rng.permutation(len(source))[:n]], target[rng.permutation(len(target))[:n]]])
    y = np.r_[np.ones(n), np.zeros(n)]
    classifier = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=1000))
    error = 1.0 - cross_val_score(classifier, x, y, cv=3).mean()
    return float(2.0 * (1.0 - 2.0 * min(error, 0.5)))
