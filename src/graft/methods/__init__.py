"""Training methods: what changes between ways of training (the loss, the batches drawn, the
extra modules); :func:`graft.train.trainer.run_stages` is what stays (stages, optimizers,
schedules, early stopping, checkpoints, exact resume, history, progress).

Grouped by mechanism: :mod:`.supervised` (labelled images, cross-entropy), :mod:`.adversarial`
(domain-adversarial training: gradient reversal, DANN), :mod:`.distillation` (teacher-student).
"""
from graft.methods.base import StepOutput, TrainingMethod
from graft.methods.supervised import Supervised

__all__ = ["StepOutput", "Supervised", "TrainingMethod"]
