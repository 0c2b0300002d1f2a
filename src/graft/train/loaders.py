"""The training loaders every method's batches come from: shuffled, class-balanced, or one
shard per process under ``torchrun``."""
from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from graft.defaults import SAMPLERS
from graft.errors import GraftError


def training_loader(dataset: Dataset, labels, batch_size: int, sampler: str = "shuffle",
                    generator: torch.Generator | None = None, distributed: bool = False,
                    seed: int = 0) -> DataLoader:
    """A training DataLoader over ``dataset`` (``labels``: its class index per item, ``[N]``).

    - ``shuffle``: every item once per epoch, in the order ``generator`` draws;
    - ``balanced``: ``N`` draws with replacement, each class equally likely (item weight
      ``1 / count(class)``, scikit-learn's ``class_weight="balanced"`` as a sampler);
    - ``distributed`` (under ``torchrun``): a :class:`DistributedSampler` seeded with
      ``seed``, so each process trains on its own ``1 / world_size`` of every epoch (the
      engine reshuffles it per epoch); it cannot be combined with ``balanced``.

    The last incomplete batch is dropped when there is more than one batch (BatchNorm needs
    more than one example); always under ``distributed``, so every process steps alike.
    Raises :class:`GraftError` for an unknown sampler or balanced + distributed.
    """
    if sampler not in SAMPLERS:
        raise GraftError(f"--sampler must be {' or '.join(SAMPLERS)}, got {sampler!r}")
    if distributed:
        if sampler == "balanced":
            raise GraftError("--sampler balanced is not supported under torchrun (DDP shards with its own "
                             "sampler); use --class-weight balanced instead")
        from torch.utils.data.distributed import DistributedSampler

        shards = DistributedSampler(dataset, shuffle=True, seed=seed, drop_last=True)
        return DataLoader(dataset, batch_size=batch_size, sampler=shards, drop_last=True)
    drop_last = len(dataset) > batch_size
    if sampler == "balanced":
        from torch.utils.data import WeightedRandomSampler

        labels = np.asarray(labels)
        counts = np.bincount(labels)
        weights = torch.as_tensor(1.0 / np.maximum(counts[labels], 1), dtype=torch.double)
        draws = WeightedRandomSampler(weights, len(dataset), replacement=True, generator=generator)
        return DataLoader(dataset, batch_size=batch_size, sampler=draws, drop_last=drop_last)
    return DataLoader(dataset, batch_size=batch_size, shuffle=True, generator=generator, drop_last=drop_last)
