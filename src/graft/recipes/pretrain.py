"""``graft pretrain``: train a network from random initialisation on a labelled source folder
(pretrain-then-transfer). Its run folder is then a backbone for every other command
(``--backbone RUN``): fine-tune it, cut features from it, or copy its first layers
(``--transfer-layers first:K --transfer-from RUN``, Yosinski et al., NeurIPS 2014)."""
from __future__ import annotations

from graft.recipes._run import FitResult, as_config
from graft.recipes._run_plan import SUPERVISED
from graft.recipes._training import continue_training, start_training
from graft.recipes.settings import PretrainConfig

__all__ = ["PretrainConfig", "continue_run", "pretrain"]


def pretrain(config, out, *, strict: bool = False, progress: bool = True, overwrite: bool = False,
             **settings) -> FitResult:
    """Supervised training of ``config.backbone`` (an architecture) from random weights, or,
    with ``config.unlabelled_dir``, self-taught: a pretrained network continued self-supervised
    on unlabelled images (:mod:`graft.recipes.selftaught`).

    Parameters
    ----------
    config : PretrainConfig, str or None
        The settings; or the labelled source folder, with the Config's fields as keywords
        (``settings``); or None with ``unlabelled_dir`` among the keywords (self-taught).
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
        Fields of :class:`~graft.recipes.settings.PretrainConfig`, when ``config`` is not one.

    Returns
    -------
    FitResult
        The run folder (model, reports, history, checkpoints) and its metrics. The run is a
        backbone for every other command (``--backbone RUN``) and resumes with ``graft resume RUN``.

    Raises
    ------
    GraftError
        A setting no run can use, or an output folder that is or lies inside an input folder;
        raised before the run folder is touched.
    DataError
        A folder that is missing, empty, or without readable images.

    References
    ----------
    Yosinski et al., "How transferable are features in deep neural networks?", NeurIPS 2014
    (pretrain-then-transfer). Raina et al., "Self-taught Learning", ICML 2007; Chen and He,
    "Exploring Simple Siamese Representation Learning", CVPR 2021 (``--unlabelled``).
    """
    if not isinstance(config, PretrainConfig) and config is None:  # pretrain(None, out, unlabelled_dir=...)
        config = PretrainConfig(**settings)
        settings = {}
    config = as_config(PretrainConfig, config, settings)
    if config.unlabelled_dir:  # self-taught: continue a pretrained network on unlabelled images
        from graft.recipes.selftaught import pretrain_unlabelled

        return pretrain_unlabelled(config, out, strict=strict, progress=progress, overwrite=overwrite)
    return start_training(config, out, SUPERVISED, strict=strict, progress=progress, overwrite=overwrite)


def continue_run(run, saved: dict, *, given: dict, strict: bool = False, progress: bool = True) -> FitResult:
    """Continue a killed pretrain run (see :func:`graft.recipes.resume.resume`)."""
    if saved["settings"].get("unlabelled_dir"):
        from graft.recipes.selftaught import continue_unlabelled

        return continue_unlabelled(run, saved, given=given, strict=strict, progress=progress)
    return continue_training(run, saved, PretrainConfig, SUPERVISED, given=given, strict=strict, progress=progress)
