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
    """Fine-tune a pretrained network: head transplant, then staged unfreezing; writes the model,
    reports, ``history.jsonl`` and training curves into ``out``.

    Parameters
    ----------
    config : FinetuneConfig or str
        The settings; or the training folder (one sub-folder of images per class),
        with the Config's fields as keywords (``settings``).
    out : str or pathlib.Path
        The run folder: new, empty, or an earlier run of this command (replaced).
    strict : bool, default False
        Stop at the first unreadable image (DataError) instead of skipping it with a warning.
    progress : bool, default True
        Show progress bars on stderr.
    overwrite : bool, default False
        Write into a folder that holds something else than an earlier run of this command
        (graft's own outputs are removed first; the user's other files stay).
    **settings
        Fields of :class:`~graft.recipes.settings.FinetuneConfig`, when ``config`` is a folder.

    Returns
    -------
    FitResult
        The run folder and the metrics written to ``RUN/metrics.json`` (``.model`` loads the
        saved model).

    Raises
    ------
    GraftError
        A setting no run can use, or an output folder that is or lies inside an input folder;
        raised before the run folder is touched.
    DataError
        A folder that is missing, empty, has fewer than two classes or no readable image.

    Notes
    -----
    Stages come from ``config.stages`` (``"head:2,top2:2"``: epochs per stage, each stage training
    more of the network). ``lr="auto"`` runs an LR range test on the first stage
    (:func:`graft.recipes.lr_find.find_lr`) and uses its suggestion. Head-only stages train on
    plain images unless ``augment_head_stage``: the frozen base then runs once per stage instead
    of once per epoch, and the head converges as a linear probe does before the base moves
    (LP-FT). The model kept is the epoch that was best by ``config.monitor`` / ``config.mode``.
    A run with checkpoints is continued with :func:`graft.recipes.resume.resume`.

    References
    ----------
    Kumar et al., "Fine-Tuning can Distort Pretrained Features and Underperform
    Out-of-Distribution", ICLR 2022 (LP-FT). Smith, "Cyclical Learning Rates for Training Neural
    Networks", WACV 2017 (the LR range test).
    """
    config = as_config(FinetuneConfig, config, settings)
    return start_training(config, out, SUPERVISED, strict=strict, progress=progress, overwrite=overwrite)


def continue_run(run, saved: dict, *, given: dict, strict: bool = False, progress: bool = True) -> FitResult:
    """Continue a killed or interrupted finetune run (see :func:`graft.recipes.resume.resume`)."""
    return continue_training(run, saved, FinetuneConfig, SUPERVISED, given=given, strict=strict, progress=progress)
