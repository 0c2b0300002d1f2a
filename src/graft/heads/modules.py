"""Classifier head modules: the torch layers that sit on pooled backbone features.

``HEAD_MODULES`` maps a kind to an ``nn.Module`` class with ``config()`` /
``from_config(cfg)``, so a saved model rebuilds its head from JSON plus safetensors (nothing
pickled). Fine-tuning trains ``linear`` and ``mlp``; the classical fits in
:mod:`graft.heads.classical` produce the state of any of them.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from graft.errors import GraftError

HEAD_MODULES: dict[str, type[nn.Module]] = {}


def register_head_module(kind: str):
    def wrap(cls):
        HEAD_MODULES[kind] = cls
        cls.kind = kind
        return cls
    return wrap


def build_head(config: dict) -> nn.Module:
    """The torch head module a saved head config describes (graft.json's ``head``).

    Parameters
    ----------
    config : dict
        ``kind`` (a name of :data:`HEAD_MODULES`: linear, mlp, rbf-svm, knn, prototype, ...)
        and that module's own settings (``in_features``, ``num_classes``, ...).

    Returns
    -------
    torch.nn.Module
        The head, weights uninitialised: load its state dict next. Input (N, D) features,
        output (N, classes) logits.

    Raises
    ------
    GraftError
        An unknown ``kind``.
    """
    kind = config.get("kind")
    if kind not in HEAD_MODULES:
        raise GraftError(f"unknown head kind {kind!r}; known: {', '.join(sorted(HEAD_MODULES))}")
    return HEAD_MODULES[kind].from_config(config)


# ----------------------------------------------------------------------------- modules
@register_head_module("linear")
class LinearHead(nn.Module):
    """logits = W x + b."""

    def __init__(self, in_features: int, num_classes: int):
        super().__init__()
        self.fc = nn.Linear(in_features, num_classes)

    def forward(self, x):
        return self.fc(x)

    def config(self) -> dict:
        return {"kind": "linear", "in_features": self.fc.in_features, "num_classes": self.fc.out_features}

    @classmethod
    def from_config(cls, cfg):
        return cls(cfg["in_features"], cfg["num_classes"])


@register_head_module("mlp")
class MLPHead(nn.Module):
    """FC(hidden) -> ReLU -> Dropout(p) -> FC(classes): the "FCHeadNet" head transplant."""

    def __init__(self, in_features: int, num_classes: int, hidden: int = 256, dropout: float = 0.5):
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden)
        self.act = nn.ReLU()
        self.drop = nn.Dropout(dropout)
        self.fc2 = nn.Linear(hidden, num_classes)

    def forward(self, x):
        return self.fc2(self.drop(self.act(self.fc1(x))))

    def config(self) -> dict:
        return {"kind": "mlp", "in_features": self.fc1.in_features, "num_classes": self.fc2.out_features,
                "hidden": self.fc1.out_features, "dropout": self.drop.p}

    @classmethod
    def from_config(cls, cfg):
        return cls(cfg["in_features"], cfg["num_classes"], cfg["hidden"], cfg["dropout"])


class _StandardizedInput(nn.Module):
    """Shared by the non-linear heads: z = (x - mean) / scale, then L2-normalised."""

    def __init__(self, in_features: int):
        super().__init__()
        self.register_buffer("mean", torch.zeros(in_features))
        self.register_buffer("scale", torch.ones(in_features))

    def standardize(self, x):
        return F.normalize((x - self.mean) / self.scale, dim=1)


@register_head_module("prototype")
class PrototypeHead(_StandardizedInput):
    """Nearest class mean by cosine similarity: logits = temperature * cos(z, prototype_c)."""

    def __init__(self, in_features: int, num_classes: int, temperature: float = 10.0):
        super().__init__(in_features)
        self.register_buffer("prototypes", torch.zeros(num_classes, in_features))
        self.temperature = temperature

    def forward(self, x):
        return self.temperature * self.standardize(x) @ F.normalize(self.prototypes, dim=1).T

    def config(self):
        return {"kind": "prototype", "in_features": self.prototypes.shape[1],
                "num_classes": self.prototypes.shape[0], "temperature": self.temperature}

    @classmethod
    def from_config(cls, cfg):
        return cls(cfg["in_features"], cfg["num_classes"], cfg["temperature"])


@register_head_module("knn")
class KNNHead(_StandardizedInput):
    """k nearest training vectors by cosine similarity; probabilities are vote fractions.

    Logits are log(votes + 1e-6) so that softmax gives back the vote fractions.
    """

    def __init__(self, in_features: int, num_classes: int, n_train: int, k: int = 5):
        super().__init__(in_features)
        self.register_buffer("memory", torch.zeros(n_train, in_features))
        self.register_buffer("memory_labels", torch.zeros(n_train, dtype=torch.long))
        self.num_classes = num_classes
        self.k = k

    def forward(self, x):
        similarity = self.standardize(x) @ self.memory.T
        nearest = similarity.topk(self.k, dim=1).indices
        votes = F.one_hot(self.memory_labels[nearest], self.num_classes).sum(dim=1).float() / self.k
        return torch.log(votes + 1e-6)

    def config(self):
        return {"kind": "knn", "in_features": self.memory.shape[1], "num_classes": self.num_classes,
                "n_train": self.memory.shape[0], "k": self.k}

    @classmethod
    def from_config(cls, cfg):
        return cls(cfg["in_features"], cfg["num_classes"], cfg["n_train"], cfg["k"])


@register_head_module("rbf-svm")
class RBFSVMHead(_StandardizedInput):
    """One-vs-rest RBF-kernel SVMs: score_c = sum_i alpha_ic exp(-gamma |z - s_i|^2) + b_c."""

    def __init__(self, in_features: int, num_classes: int, n_support: int, gamma: float = 1.0):
        super().__init__(in_features)
        self.register_buffer("support", torch.zeros(n_support, in_features))
        self.register_buffer("dual_coef", torch.zeros(n_support, num_classes))
        self.register_buffer("intercept", torch.zeros(num_classes))
        self.gamma = gamma

    def forward(self, x):
        z = self.standardize(x)
        sq = (z * z).sum(1, keepdim=True) - 2 * z @ self.support.T + (self.support ** 2).sum(1)
        return torch.exp(-self.gamma * sq.clamp_min(0)) @ self.dual_coef + self.intercept

    def config(self):
        return {"kind": "rbf-svm", "in_features": self.support.shape[1],
                "num_classes": self.dual_coef.shape[1], "n_support": self.support.shape[0],
                "gamma": self.gamma}

    @classmethod
    def from_config(cls, cfg):
        return cls(cfg["in_features"], cfg["num_classes"], cfg["n_support"], cfg["gamma"])


@register_head_module("class-sum")
class ClassSumHead(nn.Module):
    """Zero-shot head (``graft zeroshot``): the backbone's own source classifier (W x + b,
    softmax over its ``source_classes``), then each class's probability is the sum over the
    source classes that ``membership`` (K, source_classes; 0/1) gives it. Logits are the log of
    those sums, so a softmax gives them back renormalised."""

    def __init__(self, in_features: int, num_classes: int, source_classes: int = 1000):
        super().__init__()
        self.fc = nn.Linear(in_features, source_classes)
        self.register_buffer("membership", torch.zeros(num_classes, source_classes))

    def forward(self, x):
        return torch.log(torch.softmax(self.fc(x), dim=1) @ self.membership.T + 1e-12)

    def config(self):
        return {"kind": "class-sum", "in_features": self.fc.in_features, "num_classes": self.membership.shape[0],
                "source_classes": self.fc.out_features}

    @classmethod
    def from_config(cls, cfg):
        return cls(cfg["in_features"], cfg["num_classes"], cfg["source_classes"])


def head_from_state(config: dict, state: dict[str, np.ndarray]) -> nn.Module:
    """A head module of ``config``'s kind holding the given (numpy) tensors."""
    head = build_head(config)
    head.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in state.items()}, strict=True)
    return head.eval()


@register_head_module("multitask")
class MultiTaskHead(nn.Module):
    """One head per task on the shared features; the logits of all tasks side by side, so the
    model keeps one output (ONNX included). ``slices`` says which columns are whose; each
    task's probabilities are a softmax over its own columns."""

    def __init__(self, tasks: list[dict]):
        super().__init__()
        self.tasks = [{"name": t["name"], "classes": list(t["classes"])} for t in tasks]
        self.heads = nn.ModuleDict({t["name"]: build_head(t["head"]) for t in tasks})
        start, self.slices = 0, {}
        for task in self.tasks:
            self.slices[task["name"]] = slice(start, start + len(task["classes"]))
            start += len(task["classes"])

    def forward(self, x):
        return torch.cat([self.heads[task["name"]](x) for task in self.tasks], dim=1)

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.cat([torch.softmax(logits[:, part], dim=1) for part in self.slices.values()], dim=1)

    def config(self) -> dict:
        return {"kind": "multitask", "num_classes": sum(len(t["classes"]) for t in self.tasks),
                "tasks": [{**task, "head": self.heads[task["name"]].config()} for task in self.tasks]}

    @classmethod
    def from_config(cls, cfg):
        return cls(cfg["tasks"])


def head_probabilities(head: nn.Module, logits: torch.Tensor) -> torch.Tensor:
    """Softmax over the classes, or over each task's classes for a multi-task head."""
    return head.probabilities(logits) if hasattr(head, "probabilities") else torch.softmax(logits, dim=1)
