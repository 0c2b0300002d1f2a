"""Optimizers, learning-rate groups and schedules for one stage of fine-tuning.

One optimizer per stage: the head (and a method's own modules) at the head LR, unfrozen
backbone layers at ``lr * base_lr_factor``, optionally decaying layer by layer down the
network; within the stage, warm-up + cosine or one-cycle, stepped once per batch.

Why not timm's factories (checked against timm 1.0 on tf_efficientnet_lite0, 100 steps):
- ``timm.scheduler.CosineLRScheduler`` (``warmup_prefix=True``) warms up linearly from
  ``warmup_lr_init`` and reaches the peak one step later than graft's ``(step + 1) / warmup``
  ramp: 9-10 of the first 10 steps' LRs differ (by up to 10 % of the peak), which changes the
  default fine-tune's recorded numbers and every resumed history.
- timm has no one-cycle schedule; torch's ``OneCycleLR`` (cos, pct_start 0.25, div 25)
  anneals to ``peak / (25 * 1e4)`` instead of ``peak / 1e4`` and cycles momentum by default
  (up to 3.6 % of the peak apart per step).
- ``timm.optim.param_groups_layer_decay`` groups parameters by timm's ``group_matcher`` (not
  graft's layer units, which ``graft layers`` prints and ``--freeze-first`` counts), scales
  from the top of the whole model rather than from the head's LR, and takes weight decay off
  every 1-D parameter: 145 of lite0's 147 backbone tensors got another LR, 98 lost their
  weight decay.
So graft keeps its own LambdaLR factors and groups; the numbers stay as recorded.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import nn

from graft.defaults import OPTIMIZERS, SCHEDULES
from graft.errors import GraftError
from graft.train.settings import LoopSettings
from graft.train.stages import Stage, apply_stage, trainable_names


def cosine_with_warmup(total_steps: int, warmup_fraction: float):
    """LR factor per step: linear warm-up to 1 over ``warmup_fraction`` of the steps (at least
    one; step 0 already at ``1 / warmup``), then half a cosine down to 0 at ``total_steps``."""
    warmup = max(1, int(total_steps * warmup_fraction))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total_steps - warmup)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return factor


def one_cycle(total_steps: int, rise_fraction: float = 0.25, start_divisor: float = 25.0,
              end_divisor: float = 1e4):
    """One-cycle LR (Smith & Topin, "Super-Convergence", 2018), as fastai shapes it: from
    peak/25 up to the peak over the first quarter (cosine), then cosine down to peak/1e4.
    Momentum is not cycled: graft's optimizers keep their own."""
    rise = max(1, int(total_steps * rise_fraction))

    def factor(step: int) -> float:
        if step < rise:
            low, t = 1 / start_divisor, step / rise
            return low + (1 - low) * 0.5 * (1 - math.cos(math.pi * t))
        t = min(1.0, (step - rise) / max(1, total_steps - rise))
        low = 1 / end_divisor
        return low + (1 - low) * 0.5 * (1 + math.cos(math.pi * t))

    return factor


def param_groups(settings: LoopSettings, trunk: nn.Module, head: nn.Module, lr: float,
                 extra: list | tuple = ()) -> list[dict]:
    """Optimizer groups for the current freeze state: the head (and a method's own modules,
    ``extra``) at ``lr``, trainable backbone layers at ``lr * base_lr_factor``, and with
    ``layer_decay`` each trainable unit below the top one another factor ``layer_decay``
    smaller (the lowest layers move least; Howard & Ruder, ULMFiT, 2018). Each group is
    named (``head``, ``method``, ``backbone`` or the unit's name)."""
    groups = [{"params": list(head.parameters()), "lr": lr, "name": "head"}]
    if extra:
        groups.append({"params": list(extra), "lr": lr, "name": "method"})
    base_lr = lr * settings.base_lr_factor
    if settings.layer_decay is None:
        base = [p for p in trunk.parameters() if p.requires_grad]
        if base:
            groups.append({"params": base, "lr": base_lr, "name": "backbone"})
        return groups
    from graft.backbones import layer_units

    trainable_units = [(name, [p for p in module.parameters() if p.requires_grad])
                       for name, module in layer_units(trunk)]
    trainable_units = [(name, params) for name, params in trainable_units if params]
    for depth, (name, params) in enumerate(reversed(trainable_units)):
        groups.append({"params": params, "lr": base_lr * settings.layer_decay ** depth, "name": name})
    # Parameters outside every layer unit (a ViT's cls_token / pos_embed) sit at the bottom.
    grouped = {id(p) for group in groups for p in group["params"]}
    rest = [p for p in trunk.parameters() if p.requires_grad and id(p) not in grouped]
    if rest:
        groups.append({"params": rest, "lr": base_lr * settings.layer_decay ** len(trainable_units),
                       "name": "other"})
    return groups


def freeze_for_stage(settings: LoopSettings, stage: Stage, trunk: nn.Module, head: nn.Module) -> list[str]:
    """Set what trains in ``stage``; return the trainable backbone parameter names."""
    if settings.freeze_first is not None:  # "freeze the first K layers" replaces the plan's freezing
        return apply_stage(trunk, head, freeze_first=settings.freeze_first, always_frozen=settings.always_frozen)
    return apply_stage(trunk, head, stage, always_frozen=settings.always_frozen)


class StageOptimizer(NamedTuple):
    """What :func:`stage_optimizer` builds for one stage."""
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR  # stepped once per batch
    trainable: list[str]  # trainable backbone parameter names (checked again on resume)
    n_base: int  # trainable backbone parameters, counted


def check_choices(settings: LoopSettings) -> None:
    """One clear line for an unknown optimizer or schedule name."""
    if settings.optimizer not in OPTIMIZERS:
        raise GraftError(f"unknown optimizer {settings.optimizer!r}: {', '.join(OPTIMIZERS)}")
    if settings.schedule not in SCHEDULES:
        raise GraftError(f"unknown schedule {settings.schedule!r}: {', '.join(SCHEDULES)}")


def stage_optimizer(settings: LoopSettings, stage: Stage, trunk: nn.Module, head: nn.Module,
                    steps_per_epoch: int, extra=()) -> StageOptimizer:
    """Freeze for ``stage`` (:func:`freeze_for_stage`), then :func:`optimizer_for_stage`."""
    freeze_for_stage(settings, stage, trunk, head)
    return optimizer_for_stage(settings, stage, trunk, head, steps_per_epoch, extra)


def build_optimizer(settings: LoopSettings, groups: list[dict]) -> torch.optim.Optimizer:
    """``settings.optimizer`` (a name of graft.defaults' registry: its torch.optim class and
    arguments) over ``groups``, with ``settings.weight_decay``."""
    optimizer_class, options = OPTIMIZERS[settings.optimizer]  # the registry: graft.defaults
    return getattr(torch.optim, optimizer_class)(groups, weight_decay=settings.weight_decay, **options)


def optimizer_for_stage(settings: LoopSettings, stage: Stage, trunk: nn.Module, head: nn.Module,
                        steps_per_epoch: int, extra=()) -> StageOptimizer:
    """A fresh optimizer (head LR, smaller base LR) over what trains now (``requires_grad``:
    whoever froze the network decided) and its schedule over the stage's ``stage.epochs *
    steps_per_epoch`` steps. ``extra`` are a training method's own parameters (trained at the
    head's LR). Every group remembers its ``peak_lr``."""
    check_choices(settings)
    groups = param_groups(settings, trunk, head, settings.lr, extra)
    for group in groups:
        group["peak_lr"] = group["lr"]
    optimizer = build_optimizer(settings, groups)
    steps = stage.epochs * max(1, steps_per_epoch)
    schedule = one_cycle(steps) if settings.schedule == "onecycle" else \
        cosine_with_warmup(steps, settings.warmup_fraction)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    n_base = sum(p.numel() for p in trunk.parameters() if p.requires_grad)
    return StageOptimizer(optimizer, scheduler, trainable_names(trunk), n_base)
