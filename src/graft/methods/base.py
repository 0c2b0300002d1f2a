"""The contract between the training engine and a method (TLlib's method-as-a-module, with a
Lightning-style ``training_step``), and :func:`evaluate_loader`, the plain validation pass.

The engine (:class:`graft.train.trainer.Trainer`) imports this contract; nothing here imports
the engine.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F


@dataclass
class StepOutput:
    """One training step's result: the loss to minimise, and what the epoch row reports."""
    loss: torch.Tensor  # a scalar with a graph back to the trainable parameters
    count: int  # labelled examples the task loss saw (the train_loss/train_accuracy weight)
    correct: int  # of those, how many the network classified right
    logs: dict[str, float] = field(default_factory=dict)  # summed per example; averaged per epoch
    # the class index of each labelled example the step drew ``[count]``, so an epoch can say
    # what its sampler drew (``train_class_counts`` in history.jsonl); None when not labelled
    labels: torch.Tensor | None = None


def evaluate_loader(model: nn.Module, loader, with_probabilities: bool = False):
    """Score ``model`` in eval mode on every batch of ``loader`` (``(images, labels)`` pairs).

    Returns ``(mean cross-entropy loss, accuracy in [0, 1], labels [N], predictions [N])``
    as numpy arrays, plus the softmax probabilities ``[N, classes]`` (in loader order) with
    ``with_probabilities``. An empty loader gives loss 0 and accuracy 0.
    """
    model.eval()
    losses, labels, probabilities = [], [], []
    with torch.inference_mode():
        for images, targets in loader:
            logits = model(images)
            losses.append(F.cross_entropy(logits, targets, reduction="sum").item())
            labels.append(targets.numpy())
            probabilities.append(torch.softmax(logits, dim=1).numpy())
    y, probs = np.concatenate(labels), np.concatenate(probabilities)
    p = probs.argmax(1)
    result = (sum(losses) / max(1, len(y)), float((y == p).mean()) if len(y) else 0.0, y, p)
    return (*result, probs) if with_probabilities else result


class TrainingMethod:
    """Override what differs; the defaults are plain supervised training on one loader.

    - :meth:`modules`: extra trainable modules (a domain discriminator, loss weights). The
      engine optimizes them at the head's learning rate and checkpoints them.
    - :meth:`batches`: what one epoch draws from the stage's training loader (several loaders
      zipped or cycled, for instance).
    - :meth:`training_step`: the loss on one drawn batch. ``forward`` maps the loader's inputs
      to logits (the whole model, or its trainable suffix over cached frozen outputs).
    - :meth:`mixes`: whether augmented batches are mixed (MixUp/CutMix); reported per epoch.
    - :meth:`evaluate`: the validation loss and accuracy, plus extra logs, for the epoch's
      row (the callbacks select and stop on the row's ``monitor``).
    - :meth:`epoch_fields`: what the method adds to every epoch's row (its name).
    - :meth:`state_dict`: everything needed to resume exactly (counters, random generators).

    ``needs_images``: a training step needs the images themselves, so the engine must not
    replace a frozen prefix by its cached outputs (LwF runs the source model on the images;
    DANN and multi-task batches are not one loader's).

    ``loss_scale``: how many times a uniform guess's cross-entropy (ln classes) the method's
    loss is at chance; the divergence guard stops a run whose loss goes far beyond it.
    """

    name = "method"
    needs_images = False
    loss_scale = 1.0

    def setup(self, model: nn.Module, trunk: nn.Module, head: nn.Module, total_steps: int) -> None:
        """Called once before training: the network, and the run's total optimizer steps."""

    def modules(self) -> dict[str, nn.Module]:
        return {}

    def parameters(self) -> list[nn.Parameter]:
        return [p for module in self.modules().values() for p in module.parameters() if p.requires_grad]

    def batches(self, loader, epoch: int):
        return iter(loader)

    def steps_per_epoch(self, loader) -> int:
        return len(loader)

    def mixes(self, augmented: bool) -> bool:
        """Are this stage's batches mixed (MixUp/CutMix)? ``augmented``: the stage trains on
        augmented images. The default method never mixes."""
        return False

    def training_step(self, forward, batch, augmented: bool) -> StepOutput:
        raise NotImplementedError

    def evaluate(self, evaluated, val_loader) -> tuple[float, float, dict]:
        """(validation loss, validation accuracy, extra logs), written into the epoch's row as
        ``val_loss``, ``val_accuracy`` and the logs' keys."""
        loss, accuracy, _, _ = evaluate_loader(evaluated, val_loader)
        return loss, accuracy, {}

    def epoch_fields(self) -> dict:
        """Fields every history row of this method carries, after the engine's own: by default
        its ``name`` as ``method``, so a row says how it was trained."""
        return {"method": self.name}

    def train(self, mode: bool = True) -> None:
        for module in self.modules().values():
            module.train(mode)

    def state_dict(self) -> dict:
        return {f"{name}.{key}": value.detach().clone()
                for name, module in self.modules().items() for key, value in module.state_dict().items()}

    def load_state_dict(self, state: dict) -> None:
        for name, module in self.modules().items():
            prefix = f"{name}."
            module.load_state_dict({k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)})
