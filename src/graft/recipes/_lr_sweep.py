"""The LR range test of a network-training run: ``--lr auto`` (rank 0 sweeps the first
stage, every process uses its suggestion) and ``graft lr-find``'s sweep of one stage, on the
frozen prefix's cached outputs when the stage allows it (Smith 2017, "Cyclical Learning Rates
for Training Neural Networks")."""
from __future__ import annotations

from typing import TYPE_CHECKING

from graft.errors import GraftError
from graft.methods.supervised import balanced_class_weights
from graft.recipes.settings.versions import settings_record
from graft.train.distributed import is_main_process

if TYPE_CHECKING:
    from graft.artifacts.run_folder import RunDir
    from graft.recipes._run_plan import TrainingPlan


def saved_settings(config, lr_found: float | None) -> dict:
    """config.yaml's settings: the Config, and the LR ``--lr auto`` found (kept for a resume)."""
    return {**config.to_dict(), **({"lr_found": lr_found} if lr_found is not None else {})}


def auto_lr(run: RunDir, parts: TrainingPlan, method, progress: bool, distributed: bool) -> float:
    """``--lr auto``: rank 0 range-tests the first stage and every process uses its suggestion."""
    lr, failure = None, None
    if is_main_process():
        try:
            sweep = sweep_stage(parts, parts.plan[0], needs_images=method.needs_images, progress=progress)
            sweep.save(run.path)
            lr = sweep.suggestion
            run.write_config(settings_record(parts.config.COMMAND, saved_settings(parts.config, lr)))
        except GraftError as exc:
            if not distributed:
                raise
            failure = str(exc)
    if distributed:  # every rank learns the LR, or the error, so none waits forever
        import torch.distributed as dist

        box = [lr, failure]
        dist.broadcast_object_list(box, src=0)
        lr, failure = box
    if failure is not None:
        raise GraftError(failure)
    return float(lr)


def sweep_stage(parts: TrainingPlan, stage, *, needs_images: bool = False, start=1e-6, end=1.0, steps=100,
                progress=True):
    """LR range test with ``stage``'s trainable set, on its frozen prefix's outputs when it can."""
    from graft.train.lr_find import lr_sweep
    from graft.train.optim import build_optimizer, freeze_for_stage, param_groups
    from graft.train.prefix import cached_prefix_loaders

    loop = parts.loop
    freeze_for_stage(loop, stage, parts.features.trunk, parts.head)
    forward, loader = parts.model, parts.train_loader if loop.stage_augmented(0) else parts.plain_loader
    if not loop.stage_augmented(0) and not needs_images:
        cached = cached_prefix_loaders(parts.features.trunk, parts.head, loader, None, parts.generator, progress,
                                       parts.frozen_prefix.encode_pooled)
        if cached is not None:
            forward, loader = cached[0], cached[1]

    def make_optimizer(lr):
        groups = param_groups(loop, parts.features.trunk, parts.head, lr)
        return build_optimizer(loop, groups)

    state = parts.generator.get_state()
    try:
        weights = balanced_class_weights(parts.train.labels, len(parts.train.classes)) \
            if parts.config.class_weight == "balanced" else None
        return lr_sweep(forward, loader, make_optimizer, start=start, end=end, steps=steps, progress=progress,
                        class_weights=weights)
    finally:
        parts.generator.set_state(state)  # the sweep does not change the training run's shuffles
