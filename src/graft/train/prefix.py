"""Reusing a frozen prefix: compute its outputs once per stage instead of every epoch.

While the first layers of the network are frozen and the inputs are not augmented, their
outputs on the training (and validation) images never change within a stage. They are
computed once, kept in memory, and each epoch only runs the trainable rest. The split is
between layer units (see :func:`graft.backbones.layer_units`) and is checked numerically
against the whole network before it is used.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from ..backbones import layer_units

MAX_PREFIX_BYTES = 1 << 30  # keep at most 1 GiB of cached activations


class SuffixModel(nn.Module):
    """head(pool(rest of the trunk)) applied to cached prefix outputs."""

    def __init__(self, suffix: nn.Module, head: nn.Module):
        super().__init__()
        self.suffix, self.head = suffix, head

    def forward(self, z):
        z = self.suffix(z)
        if z.ndim == 4:
            z = z.mean(dim=(2, 3))
        return self.head(z)


def frozen_prefix_length(trunk: nn.Module) -> int:
    """Number of leading units with no trainable parameter."""
    units = layer_units(trunk)
    for index, (_, module) in enumerate(units):
        if any(p.requires_grad for p in module.parameters()):
            return index
    return len(units)


def split_model(trunk: nn.Module, head: nn.Module, split: int, sample: torch.Tensor):
    """(prefix, SuffixModel) if running the units in sequence reproduces the trunk, else None."""
    modules = [module for _, module in layer_units(trunk)]
    prefix, suffix = nn.Sequential(*modules[:split]), SuffixModel(nn.Sequential(*modules[split:]), head)
    was_training = trunk.training
    trunk.eval()
    head.eval()
    try:
        with torch.inference_mode():
            whole = trunk(sample)
            if whole.ndim == 4:
                whole = whole.mean(dim=(2, 3))
            pieces = suffix(prefix(sample))
            reference = head(whole)
        same = pieces.shape == reference.shape and torch.allclose(pieces, reference, atol=1e-4, rtol=1e-4)
    except Exception:  # a unit that cannot run on its own: the net is not a plain sequence
        same = False
    finally:
        trunk.train(was_training)
    return (prefix, suffix) if same else None


def encode(prefix: nn.Module, loader: DataLoader, progress: bool = False,
           description: str = "frozen layers") -> TensorDataset | None:
    """Prefix outputs of every batch of ``loader`` (in order), or None if they would not fit."""
    from ..progress import progress_bar

    prefix.eval()
    outputs, labels, total = [], [], 0
    bar = progress_bar(len(loader), description, "batch", progress)
    try:
        with torch.inference_mode():
            for images, targets in loader:
                z = prefix(images)
                total += z.numel() * z.element_size()
                if total > MAX_PREFIX_BYTES:
                    return None
                outputs.append(z.clone())
                labels.append(torch.as_tensor(targets))
                bar.update(1)
    finally:
        bar.close()
    return TensorDataset(torch.cat(outputs), torch.cat(labels))
