"""``graft finetune``: head transplant, staged unfreezing, small learning rates, conservation
training (L2-SP, LwF, BSS) and layer transfer, on the :class:`~graft.train.trainer.Trainer`
with the :class:`~graft.methods.supervised.Supervised` method. It ends in the same model
artifact and run folder as :func:`graft.recipes.frozen.fit_frozen`.
"""
from __future__ import annotations

from graft.recipes._run import FitResult, as_config
from graft.recipes._run_plan import SUPERVISED
from graft.recipes._training import continue_training, start_training
from graft.recipes.settings import FinetuneConfig

__all__ = ["FinetuneConfig", "continue_run", "finetune"]


def finetune(config, out, *, strict: bool = False, progress: bool = True, overwrite: bool = False,
             **settings) -> FitResult:
    """Head transplant + staged fine-tuning; writes model, reports, history and curves to ``out``.

    ``config``: a :class:`~graft.recipes.settings.FinetuneConfig`, or the training folder with
    the config's fields as keywords (``finetune("data", "runs/ft", stages="head:5")``).
    ``lr="auto"`` runs an LR range test on the first stage (see :func:`graft.recipes.lr_find.find_lr`)
    and uses its suggestion. Head-only stages train on plain images unless ``augment_head_stage``:
    the frozen base then runs once per stage instead of once per epoch, and the head converges
    the way a linear probe does before the base starts to move (LP-FT, Kumar et al., ICLR 2022).
    ``out`` may be new, empty or an earlier finetune run without checkpoints; a run with
    checkpoints is continued with :func:`graft.recipes.resume.resume`. Raises GraftError /
    DataError for bad settings or data, before anything is written.
    """
    config = as_config(FinetuneConfig, config, settings)
    return start_training(config, out, SUPERVISED, strict=strict, progress=progress, overwrite=overwrite)


def continue_run(run, saved: dict, *, given: dict, strict: bool = False, progress: bool = True) -> FitResult:
    """Continue a killed or interrupted finetune run (see :func:`graft.recipes.resume.resume`)."""
    return continue_training(run, saved, FinetuneConfig, SUPERVISED, given=given, strict=strict, progress=progress)
