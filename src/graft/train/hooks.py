"""The hooks of the training loop (:class:`Callback`) and what a stage runs on (:class:`StageRun`).

The :class:`~graft.train.trainer.Trainer` calls every callback's hooks in list order:

- ``on_fit_start(trainer)``: after the method's setup and, when resuming, after the trainer
  and every callback restored their state (``trainer.state.resumed_epoch`` is then set);
- ``on_stage_setup(trainer, stage)``: before the stage's optimizer is built, a hook decides
  what trains (``requires_grad``; :class:`~graft.train.freezing.StagedUnfreezing`);
- ``on_stage_start(trainer, run)``: the stage's optimizer is built; a hook may replace what
  the stage trains and validates on (``run``: a :class:`StageRun`);
- ``on_before_backward(trainer, loss)``: every training step, before its gradients;
- ``epoch_fields(trainer)``: each callback's own fields of the epoch's history row;
- ``on_epoch_end(trainer, row)``: the epoch's history row is complete; callbacks that
  select or stop on a metric read ``row[monitor]`` themselves (Lightning's ``monitor`` and
  ``mode``: :class:`~graft.train.callbacks.Monitor`);
  :class:`~graft.train.callbacks.Checkpoint` then says in ``trainer.state`` which epoch it
  keeps as best;
- ``on_fit_end(trainer)``: after the last epoch (under DDP, after every process got there).

``state_dict()`` adds a callback's own entries to the resume checkpoint (flat keys, so
checkpoints keep the layout older runs were written with); ``load_state_dict(checkpoint)``
reads them back. Only rank 0 writes files.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from graft.train.stages import Stage


@dataclass
class StageRun:
    """One stage as the loop runs it. ``on_stage_start`` hooks may replace ``forward`` (inputs
    of ``train_loader`` -> logits), ``train_loader``, ``evaluated`` (the model scored on
    ``val_loader``) and ``val_loader``; what they did they report in their own
    :meth:`Callback.epoch_fields`."""
    index: int
    stage: Stage
    augmented: bool
    images_loader: object  # the stage's image loader (its sampler is reshuffled per epoch)
    train_loader: object
    val_loader: object
    forward: nn.Module
    evaluated: nn.Module


class Callback:
    """Override the hooks you need; every default does nothing."""

    def on_fit_start(self, trainer) -> None:
        pass

    def on_stage_setup(self, trainer, stage: Stage) -> None:
        pass

    def on_stage_start(self, trainer, run: StageRun) -> None:
        pass

    def on_before_backward(self, trainer, loss: torch.Tensor) -> None:
        pass

    def epoch_fields(self, trainer) -> dict:
        """Fields this callback adds to the epoch's history row (after the engine's own, before
        its ``seconds``), e.g. what an ``on_stage_start`` hook replaced. None by default."""
        return {}

    def on_epoch_end(self, trainer, row: dict) -> None:
        pass

    def on_fit_end(self, trainer) -> None:
        pass

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, checkpoint: dict) -> None:
        pass
