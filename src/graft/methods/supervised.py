"""Plain supervised fine-tuning: cross-entropy on labelled images, optionally with MixUp /
CutMix, class weights and a conservation loss (L2-SP, LwF, BSS)."""
from __future__ import annotations

import torch
from torch.nn import functional as F

from graft.methods.mixing import soft_target_cross_entropy
from graft.methods.base import StepOutput, TrainingMethod


class Supervised(TrainingMethod):
    name = "supervised"

    def __init__(self, mixer=None, class_weights: torch.Tensor | None = None, regularizer=None,
                 needs_images: bool = False):
        self.mixer = mixer  # a graft.methods.mixing.BatchMixer; applied on augmented stages only
        self.class_weights = class_weights
        self.regularizer = regularizer  # (images, logits) -> extra loss
        self.needs_images = needs_images

    def mixes(self, augmented: bool) -> bool:
        return augmented and self.mixer is not None and self.mixer.enabled

    def training_step(self, forward, batch, augmented: bool) -> StepOutput:
        images, targets = batch
        if self.mixes(augmented):
            images, soft_targets = self.mixer(images, targets)
            logits = forward(images)
            loss = soft_target_cross_entropy(logits, soft_targets, self.class_weights)
            targets = soft_targets.argmax(1)  # train accuracy against the dominant label
        else:
            logits = forward(images)
            loss = F.cross_entropy(logits, targets, weight=self.class_weights)
        if self.regularizer is not None:
            loss = loss + self.regularizer(images, logits)
        return StepOutput(loss, len(targets), int((logits.argmax(1) == targets).sum()))
