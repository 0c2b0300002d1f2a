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
    """The model ``finetune`` would build, trained for ``config.steps`` batches of the training
    split at exponentially growing LR from ``config.start`` to ``config.end``. Writes
    ``lr_find.png`` and ``lr_find.json`` to ``out``; returns the
    :class:`~graft.train.lr_find.LRSweep` (its ``suggestion`` is the steepest-descent LR).
    With nothing but the head trainable and no augmentation, the frozen base runs once over the
    images and the sweep runs on its outputs."""
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
