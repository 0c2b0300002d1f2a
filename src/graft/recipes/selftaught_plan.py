"""The advisor's self-taught plan (issue 28): with ``--unlabelled DIR``, ``graft advise`` and
``graft auto`` consider pretraining on the user's unlabelled images first (``graft pretrain
--unlabelled``, :mod:`graft.recipes.selftaught`), then ``graft fit`` on that run's features.

It is proposed where the advice calls the data unlike ImageNet: self-supervised pretraining
continued from ImageNet weights pays most where the images are unlike ImageNet's (Reed et al.,
WACV 2022). Where the call is "similar" and sure, ImageNet's own features already fit, so it is
not proposed (issue 28's do-no-harm rule); where "similar" is unsure (the call held in fewer than
:data:`SURE` of the resampled measurements: 10 labelled MNIST-M digits a class, LEEP just over
the bar), it is checked after the quadrant's first plan, because ``graft auto`` keeps only what
wins on validation. Like a fine-tuning plan, ``graft auto`` checks it only when its estimate
fits ``--budget``.
"""
from __future__ import annotations

import math
from pathlib import Path

from graft.recipes.plans import SELF_TAUGHT_PLAN, Plan
from graft.recipes.settings.selftaught import SELF_TAUGHT, unlabelled_folder

SURE = 0.9  # the advice's "sure": the share of resampled measurements that gave the same similarity call


def self_taught_order(order: tuple[str, ...], similarity: str, sure: float) -> tuple[str, ...]:
    """The quadrant's plan ``order`` with the self-taught plan where it belongs: first when the
    data is unlike ImageNet (the quadrant's own order has it), second when the "similar" call is
    unsure, nowhere when it is sure."""
    if similarity != "similar" or sure >= SURE:
        return order
    return (order[0], SELF_TAUGHT_PLAN, *order[1:])


def count_unlabelled(folder: str) -> int:
    """Image files below ``folder`` (any layout; a listing, nothing decoded). DataError in one
    line naming ``--unlabelled`` and the folder when it is missing, a file, or holds fewer
    images than self-taught pretraining needs."""
    return len(unlabelled_folder(folder, "the self-taught plan pretrains on --unlabelled images"))


def self_taught_reasons(unlabelled_dir: str | None, similarity: str, sure: float, plans: list[Plan],
                        checks: list[str], budget_minutes: float) -> tuple[list[str], list[str]]:
    """The advice's lines on the self-taught plan, as (reasons for recommending it, notes): why
    it is tried, or why it is not proposed (data like ImageNet, surely) or left out (over the
    budget, with the budget it needs)."""
    if not unlabelled_dir:
        return [], []
    if similarity == "similar" and sure >= SURE:
        return [], [f"self-taught pretraining on --unlabelled {unlabelled_dir} not proposed: the data is like "
                "ImageNet, where ImageNet's features already fit (issue 28's do-no-harm rule)"]
    plan = next(p for p in plans if p.name == SELF_TAUGHT_PLAN)
    if plan.name in checks and similarity == "similar":
        return [f"the call 'similar to ImageNet' is unsure (it held in {100 * sure:.0f} % of resampled "
                f"measurements): graft auto also checks pretraining on the {plan.unlabelled_images} unlabelled "
                "images, and keeps it only if it wins on validation"], []
    if plan.name in checks:
        return [f"a target unlike ImageNet and {plan.unlabelled_images} unlabelled images: pretraining on them "
                f"first ({SELF_TAUGHT['objective']}, {SELF_TAUGHT['stages']} at {SELF_TAUGHT['image_size']} px) "
                "adapts the network to these images before graft fit reads its features"], []
    defaults = next(p for p in plans if p.name == "defaults")
    needed = math.ceil((defaults.estimated_seconds + plan.estimated_seconds) / 60)
    return [], [f"self-taught pretraining on --unlabelled ({plan.unlabelled_images} images) left out: about "
            f"{plan.estimated_seconds / 60:.1f} min with its fit, over --budget {budget_minutes:g} min; "
            f"--budget {needed} lets graft auto check it"]


def pretrain_backbone(plan: Plan, scratch: Path, seed: int, progress: bool):
    """``graft pretrain --unlabelled`` with its defaults (:data:`SELF_TAUGHT`) into ``scratch``;
    returns its FitResult. A scratch folder is enough: a model ``graft fit --backbone RUN``
    saves holds the trunk's weights, so it predicts after RUN is deleted."""
    from graft.recipes.pretrain import pretrain
    from graft.recipes.settings import PretrainConfig

    config = PretrainConfig(unlabelled_dir=plan.unlabelled, backbone=plan.backbone, seed=seed)
    return pretrain(config, scratch / "selftaught-run", progress=progress)


def kept_note(plan: Plan, out) -> str:
    """What auto says when the self-taught plan wins: where its backbone went."""
    return (f"; its backbone was pretrained in a scratch folder, now deleted: the model in {out} holds the "
            f"adapted weights, and `{' '.join(plan.pretrain_command(out) or [])}` keeps a backbone run")
