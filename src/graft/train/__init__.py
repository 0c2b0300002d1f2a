"""Fine-tuning building blocks (issue #3): stage plans and freezing. The loop comes next."""
from graft.train.stages import Stage, apply_stage, block_units, parse_stages, set_train_mode

__all__ = ["Stage", "apply_stage", "block_units", "parse_stages", "set_train_mode"]
