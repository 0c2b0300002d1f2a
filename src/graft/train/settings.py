"""How the training loop trains (:class:`LoopSettings`), apart from the engine, so the
optimizer factories (:mod:`graft.train.optim`) read it without importing the engine."""
from __future__ import annotations

from dataclasses import dataclass

from graft.defaults import BASE_LR_FACTOR, LR, OPTIMIZER, SCHEDULE, WEIGHT_DECAY  # graft finetune's too
from graft.train.stages import Stage

__all__ = ["LoopSettings"]


@dataclass
class LoopSettings:
    """How the loop trains; what a method or a callback decides lives there instead.

    ``lr`` is the head's peak learning rate; unfrozen backbone layers get ``lr *
    base_lr_factor``, with ``layer_decay`` another factor less per unit down from the top.
    ``schedule``: ``cosine`` (warm-up over ``warmup_fraction`` of each stage's steps, then
    cosine) or ``onecycle``. ``augmented``: per stage, train on the augmented loader (True)
    or the plain one (False); None = all augmented. ``freeze_first`` (K or a unit's name)
    replaces the plan's freezing; units in ``always_frozen`` never train (both read by
    :class:`~graft.train.callbacks.StagedUnfreezing`, which applies the plan stage by stage).
    """
    stages: list[Stage]
    lr: float = LR
    base_lr_factor: float = BASE_LR_FACTOR
    optimizer: str = OPTIMIZER
    weight_decay: float = WEIGHT_DECAY
    warmup_fraction: float = 0.1
    freeze_first: int | str | None = None
    schedule: str = SCHEDULE  # or "onecycle"
    layer_decay: float | None = None  # base LR x decay**k for the k-th trainable unit from the top
    progress: bool = True
    distributed: bool = False  # DDP: gradients averaged across processes; only rank 0 writes
    augmented: list[bool] | None = None
    always_frozen: tuple = ()  # layer units no stage trains (--freeze-transferred)

    def stage_augmented(self, index: int) -> bool:
        return True if self.augmented is None else self.augmented[index]
