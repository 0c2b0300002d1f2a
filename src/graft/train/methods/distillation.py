"""Teacher-student distillation (Hinton, Vinyals & Dean, "Distilling the Knowledge in a Neural
Network", 2015): the student matches the teacher's temperature-softened outputs as well as the
labels,

    loss = alpha * T^2 * KL(softmax(t / T) || softmax(s / T)) + (1 - alpha) * CE(s, y)

(the T^2 keeps the soft term's gradients on the scale of the hard term's as T changes).
"""
from __future__ import annotations

import torch
from torch.nn import functional as F

from .base import StepOutput, TrainingMethod


def distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """T^2 x KL(teacher_T || student_T), averaged over the batch."""
    student = F.log_softmax(student_logits / temperature, dim=1)
    teacher = F.log_softmax(teacher_logits / temperature, dim=1)
    return F.kl_div(student, teacher, reduction="batchmean", log_target=True) * temperature ** 2


class Distillation(TrainingMethod):
    """Batches whose targets are ``(label, index)`` pairs; ``teacher_logits[index]`` are the
    teacher's outputs for that training image, computed once (the inputs are not augmented,
    so they are the same every epoch)."""

    name = "distill"

    def __init__(self, teacher_logits: torch.Tensor, temperature: float = 4.0, alpha: float = 0.5):
        self.teacher_logits = teacher_logits
        self.temperature, self.alpha = temperature, alpha

    def training_step(self, forward, batch, augmented: bool) -> StepOutput:
        inputs, targets = batch
        labels, indices = targets[:, 0], targets[:, 1]
        logits = forward(inputs)
        soft = distillation_loss(logits, self.teacher_logits[indices], self.temperature)
        hard = F.cross_entropy(logits, labels)
        loss = self.alpha * soft + (1 - self.alpha) * hard
        n = len(labels)
        agree = int((logits.argmax(1) == self.teacher_logits[indices].argmax(1)).sum())
        return StepOutput(loss, n, int((logits.argmax(1) == labels).sum()),
                          {"soft_loss": soft.item() * n, "hard_loss": hard.item() * n, "teacher_agreement": agree})
