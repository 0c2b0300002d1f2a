"""The contract between the training engine and a method (TLlib's method-as-a-module, with a
Lightning-style ``training_step``)."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn


@dataclass
class StepOutput:
    """One training step's result: the loss to minimise, and what the epoch row reports."""
    loss: torch.Tensor
    count: int  # labelled examples the task loss saw (the train_loss/train_accuracy weight)
    correct: int  # of those, how many the network classified right
    logs: dict[str, float] = field(default_factory=dict)  # summed per example; averaged per epoch


class TrainingMethod:
    """Override what differs; the defaults are plain supervised training on one loader.

    - :meth:`modules`: extra trainable modules (a domain discriminator, loss weights). The
      engine optimizes them at the head's learning rate and checkpoints them.
    - :meth:`batches`: what one epoch draws from the stage's training loader (several loaders
      zipped or cycled, for instance).
    - :meth:`training_step`: the loss on one drawn batch. ``forward`` maps the loader's inputs
      to logits (the whole model, or its trainable suffix over cached frozen outputs).
    - :meth:`evaluate`: the validation metric the engine selects epochs on, plus extra logs.
    - :meth:`state_dict`: everything needed to resume exactly (counters, random generators).
    """

    name = "method"
    # Does a training step need the images themselves (not a frozen prefix's cached outputs)?
    needs_images = False

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

    def training_step(self, forward, batch, augmented: bool) -> StepOutput:
        raise NotImplementedError

    def evaluate(self, evaluated, val_loader) -> tuple[float, float, dict]:
        from graft.train.trainer import evaluate_loader

        loss, accuracy, _, _ = evaluate_loader(evaluated, val_loader)
        return loss, accuracy, {}

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
