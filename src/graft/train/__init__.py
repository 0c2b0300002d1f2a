"""Fine-tuning: stage plans and freezing (:mod:`.stages`), optimizers and schedules
(:mod:`.optim`), the training loaders (:mod:`.loaders`), the loop (:mod:`.trainer`) and its
callbacks (:mod:`.callbacks`), frozen-prefix shortcuts (:mod:`.prefix`), the LR range test
(:mod:`.lr_find`)."""
from graft.train.stages import Stage, apply_stage, block_units, parse_stages, set_train_mode

__all__ = ["Stage", "apply_stage", "block_units", "parse_stages", "set_train_mode"]
