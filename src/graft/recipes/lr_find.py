"""``graft lr-find``: the LR range test of one fine-tuning stage (Smith, "Cyclical Learning
Rates for Training Neural Networks", WACV 2017; fastai's ``lr_find``)."""
from __future__ import annotations

import warnings

from graft.artifacts.run_folder import open_run
from graft.data.folders import load_train_val
from graft.recipes._run import as_config
from graft.recipes._training import Hooks, prepare, sweep_stage
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
    with warnings.catch_warnings():  # its warnings come once, when the sweep loads the data
        warnings.simplefilter("ignore")
        load_train_val(config.train_dir, val_dir=config.val_dir, val_fraction=config.val_fraction,
                       seed=config.seed)  # data errors first
    run = open_run(out, config.COMMAND, overwrite=overwrite)
    with run.lock(config.COMMAND):
        run.write_config({"command": config.COMMAND, "settings": config.to_dict()})
        parts = prepare(config, Hooks(), strict=strict, progress=progress, distributed=False)
        sweep = sweep_stage(parts, parts.plan[0], start=config.start, end=config.end, steps=config.steps,
                            progress=progress)
        sweep.save(run.path)
    return sweep
