"""``graft lr-find``: the LR range test of one fine-tuning stage (Smith, "Cyclical Learning
Rates for Training Neural Networks", WACV 2017; fastai's ``lr_find``)."""
from __future__ import annotations

from graft.artifacts.run_folder import open_run
from graft.recipes._lr_sweep import sweep_stage
from graft.recipes._run import as_config
from graft.recipes._run_plan import SUPERVISED, build_plan, load_run_data
from graft.recipes.settings import LRFindConfig

__all__ = ["LRFindConfig", "find_lr"]


def find_lr(config, out, *, strict: bool = False, progress: bool = True, overwrite: bool = False, **settings):
    """The LR range test: the model ``finetune`` would build, trained for ``config.steps``
    batches of the training split at an exponentially growing learning rate.

    Parameters
    ----------
    config : LRFindConfig or str
        The settings; or the training folder,
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
        Fields of :class:`~graft.recipes.settings.LRFindConfig`, when ``config`` is a folder.

    Returns
    -------
    graft.train.lr_find.LRSweep
        The learning rates and smoothed losses; ``.suggestion`` is the steepest-descent LR.
        ``RUN/lr_find.png`` and ``RUN/lr_find.json`` hold the same.

    Raises
    ------
    GraftError
        A setting no run can use, or an output folder that is or lies inside an input folder;
        raised before the run folder is touched.
    DataError
        A folder that is missing, empty, has fewer than two classes or no readable image.

    Notes
    -----
    The learning rate grows from ``config.start`` to ``config.end``. With nothing but the head
    trainable and no augmentation, the frozen base runs once over the images and the sweep
    runs on its outputs.

    References
    ----------
    Smith, "Cyclical Learning Rates for Training Neural Networks", WACV 2017.
    """
    config = as_config(LRFindConfig, config, settings)
    # the data scanned and checked, the network built: all before the run folder is touched
    plan = build_plan(config, SUPERVISED, load_run_data(config, SUPERVISED), strict=strict, progress=progress,
                      distributed=False)
    run = open_run(out, config.COMMAND, overwrite=overwrite)
    with run.lock(config.COMMAND):
        run.write_config({"command": config.COMMAND, "settings": config.to_dict()})
        sweep = sweep_stage(plan, plan.plan[0], start=config.start, end=config.end, steps=config.steps,
                            progress=progress)
        sweep.save(run.path)
    return sweep
