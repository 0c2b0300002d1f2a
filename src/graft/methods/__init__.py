"""Training methods: what changes between ways of training (the loss, the batches drawn, the
extra modules, mixing); :class:`graft.train.trainer.Trainer` is what stays (stages,
optimizers, schedules) and its callbacks (early stopping, checkpoints, exact resume, history).

Grouped by mechanism: :mod:`.supervised` (labelled images, cross-entropy), :mod:`.alignment`
(domain-adversarial training: gradient reversal, DANN, CDAN), :mod:`.distillation`
(teacher-student), :mod:`.multitask` (one network, a head per task). :mod:`.base` is the
contract between a method and the engine; methods never import the engine.
"""
from graft.methods.base import StepOutput, TrainingMethod, evaluate_loader
from graft.methods.supervised import Supervised

__all__ = ["StepOutput", "Supervised", "TrainingMethod", "evaluate_loader"]
