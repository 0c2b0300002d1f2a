"""Plain supervised fine-tuning: cross-entropy on labelled images, optionally with MixUp /
CutMix, class weights and a conservation loss (L2-SP, LwF, BSS)."""
from __future__ import annotations

import numpy as np
import torch
from torch.nn import functional as F

from graft.methods.base import StepOutput, TrainingMethod
from graft.methods.mixing import soft_target_cross_entropy


class Supervised(TrainingMethod):
    """Cross-entropy on ``(images [B, C, H, W], labels [B])`` batches.

    - ``mixer``: a :class:`~graft.methods.mixing.BatchMixer` (MixUp, Zhang et al. 2018;
      CutMix, Yun et al. 2019), applied on augmented stages only; the loss is then against
      the mixed soft targets and train accuracy against each row's dominant label.
    - ``class_weights``: per-class loss weights ``[classes]`` (``--class-weight balanced``).
    - ``regularizer``: a conservation loss ``(images, logits) -> scalar`` added to the task
      loss (:mod:`graft.methods.regularization`); its per-example mean is logged per epoch
      as ``conservation_loss``.
    - ``needs_images``: the regularizer needs the images themselves (LwF runs the source
      model on them), so frozen layers may not be replaced by their cached outputs.
    """

    name = "supervised"

    def __init__(self, mixer=None, class_weights: torch.Tensor | None = None, regularizer=None,
                 needs_images: bool = False):
        self.mixer = mixer
        self.class_weights = class_weights
        self.regularizer = regularizer
        self.needs_images = needs_images

    def epoch_fields(self) -> dict:
        return {}  # the plain method: rows keep the layout runs have always had

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
        logs = {}
        if self.regularizer is not None:
            conservation = self.regularizer(images, logits)
            loss = loss + conservation
            logs["conservation_loss"] = conservation.item() * len(targets)
        return StepOutput(loss, len(targets), int((logits.argmax(1) == targets).sum()), logs, labels=targets)


def balanced_class_weights(labels, classes: int) -> torch.Tensor:
    """scikit-learn's ``class_weight="balanced"`` (n / (classes x count)) as a ``[classes]``
    float tensor; classes absent from ``labels`` weigh 0."""
    from sklearn.utils.class_weight import compute_class_weight

    labels = np.asarray(labels)
    present = np.unique(labels)
    weights = np.zeros(classes)
    weights[present] = compute_class_weight("balanced", classes=present, y=labels)
    return torch.as_tensor(weights, dtype=torch.float32)
