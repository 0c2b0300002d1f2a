"""Teacher-student distillation (Hinton, Vinyals & Dean, "Distilling the Knowledge in a Neural
Network", 2015): the student matches the teacher's temperature-softened outputs as well as the
labels,

    loss = alpha * T^2 * KL(softmax(t / T) || softmax(s / T)) + (1 - alpha) * CE(s, y)

(the T^2 keeps the soft term's gradients on the scale of the hard term's as T changes).
"""
from __future__ import annotations

import torch
from torch.nn import functional as F

from graft.methods.base import StepOutput, TrainingMethod
from graft.methods.mixing import soft_target_cross_entropy


def distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """T^2 x KL(teacher_T || student_T), averaged over the batch."""
    student = F.log_softmax(student_logits / temperature, dim=1)
    teacher = F.log_softmax(teacher_logits / temperature, dim=1)
    return F.kl_div(student, teacher, reduction="batchmean", log_target=True) * temperature ** 2


class TeacherOnStudentInputs(torch.nn.Module):
    """The teacher applied to the student's (augmented) input batch: resized to the teacher's
    input size and re-normalised from the student's mean/std to the teacher's, so both see
    the same crop ("consistent" views: Beyer et al., "Knowledge distillation: A good teacher
    is patient and consistent", CVPR 2022)."""

    def __init__(self, teacher: torch.nn.Module, teacher_size: int, student_mean, student_std, teacher_mean,
                 teacher_std):
        super().__init__()
        self.teacher, self.size = teacher.eval(), teacher_size
        as_column = lambda values: torch.tensor(values, dtype=torch.float32).view(1, 3, 1, 1)  # noqa: E731
        self.scale = as_column(student_std) / as_column(teacher_std)
        self.shift = (as_column(student_mean) - as_column(teacher_mean)) / as_column(teacher_std)

    @torch.no_grad()  # a target, not part of the graph (inference tensors could not be saved for backward)
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        images = images * self.scale + self.shift
        if images.shape[-1] != self.size or images.shape[-2] != self.size:
            images = F.interpolate(images, size=(self.size, self.size), mode="bicubic", align_corners=False)
        return self.teacher(images)


class Distillation(TrainingMethod):
    """Batches whose targets are ``(label, index)`` pairs. On plain (un-augmented) stages the
    teacher's outputs are ``teacher_logits[index]``, computed once for every training image;
    on augmented stages ``teacher`` (a :class:`TeacherOnStudentInputs`) runs on the very batch
    the student sees (None: the cached outputs there too). With ``mixer`` (a
    :class:`~graft.methods.mixing.BatchMixer`) augmented batches are mixed first and the teacher
    labels the mixed images: Beyer et al. (2022) found such "function matching" on mixed views
    the strongest distillation recipe, because the teacher's outputs on images it never trained
    on carry more than the one-hot label.

    Label -1 marks a transfer-set image (Hinton et al. 2015): it adds to the soft term only,

        loss = alpha * soft(every image) + (1 - alpha) * CE(images with a label),

    and each epoch row counts them (``transfer_images``). ``class_weights`` (``[classes]``,
    ``--class-weight balanced``) weigh the hard term's examples by their label, as in
    supervised training; the soft term follows the teacher and is not weighted."""

    name = "distill"

    def __init__(self, teacher_logits: torch.Tensor, temperature: float = 4.0, alpha: float = 0.5,
                 teacher: torch.nn.Module | None = None, mixer=None, transfer_set: bool = False,
                 class_weights: torch.Tensor | None = None):
        self.teacher_logits, self.teacher, self.mixer = teacher_logits, teacher, mixer
        self.class_weights = class_weights
        self.temperature, self.alpha = temperature, alpha
        self.loss_scale = alpha * temperature ** 2 + (1 - alpha)  # the soft term is scaled by T^2
        self.transfer_set, self.transfer_seen = transfer_set, 0

    def mixes(self, augmented: bool) -> bool:
        # Mixed images need the teacher on the batch itself, not its cached plain outputs.
        return augmented and self.teacher is not None and self.mixer is not None and self.mixer.enabled

    def training_step(self, forward, batch, augmented: bool) -> StepOutput:
        inputs, targets = batch
        labels, indices = targets[:, 0], targets[:, 1]
        known = labels >= 0
        self.transfer_seen += int((~known).sum())
        mixed = self.mixes(augmented)
        if mixed:
            inputs, label_mix = self.mixer(inputs, labels.clamp(min=0))
            known = known & known.flip(0)  # the mixer blends each image with the batch's reverse
            labels = label_mix.argmax(1)  # accuracy against the dominant label
        logits = forward(inputs)
        teacher_logits = self.teacher(inputs) if augmented and self.teacher is not None \
            else self.teacher_logits[indices]
        soft = distillation_loss(logits, teacher_logits, self.temperature)
        n = int(known.sum())
        if n == 0:  # a batch of transfer-set images only
            hard = logits.sum() * 0.0
        else:
            hard = soft_target_cross_entropy(logits[known], label_mix[known], self.class_weights) if mixed \
                else F.cross_entropy(logits[known], labels[known], weight=self.class_weights)
        loss = self.alpha * soft + (1 - self.alpha) * hard
        agree = float((logits.argmax(1) == teacher_logits.argmax(1)).float().mean())
        return StepOutput(loss, n, int((logits[known].argmax(1) == labels[known]).sum()),
                          {"soft_loss": soft.item() * n, "hard_loss": hard.item() * n, "teacher_agreement": agree * n},
                          labels=labels[known])

    def evaluate(self, evaluated, val_loader) -> tuple[float, float, dict]:
        loss, accuracy, logs = super().evaluate(evaluated, val_loader)
        if self.transfer_set:  # how many transfer-set images this epoch drew (this process's shard)
            logs["transfer_images"] = self.transfer_seen
        self.transfer_seen = 0
        return loss, accuracy, logs
