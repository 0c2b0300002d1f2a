"""Stage plans for fine-tuning: which parameters train in each stage.

A plan is written ``head:5,top2:5,all:3`` (stage:epochs, in order):

* ``head``  - only the new head trains; the whole backbone is frozen;
* ``topN``  - the head, the last N blocks of the backbone and everything after them (for
  EfficientNet, ``conv_head`` and ``bn2``) train;
* ``all``   - every layer trains.

``freeze_first`` (``--freeze-first K``) instead freezes the first K layer units as
``graft layers`` numbers them (or up to and including a named unit) and trains the rest.

A *block* is a layer unit nested in a stage container (``blocks.3.1``, ``layer2.0``); stem
and neck units (``conv_stem``, ``conv_head``) are not blocks.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from torch import nn

from graft.backbones import layer_units
from graft.errors import GraftError

_STAGE = re.compile(r"^(head|all|top([1-9]\d*))$")


@dataclass(frozen=True)
class Stage:
    name: str    # "head", "all" or "topN"
    epochs: int

    @property
    def top_blocks(self) -> int | None:
        """N for ``topN``; 0 for ``head``; None for ``all``."""
        if self.name == "head":
            return 0
        if self.name == "all":
            return None
        return int(self.name[3:])


def parse_stages(plan: str) -> list[Stage]:
    stages = []
    for part in filter(None, (p.strip() for p in plan.split(","))):
        name, _, epochs = part.partition(":")
        if not _STAGE.match(name) or not epochs.isdigit() or int(epochs) < 1:
            raise GraftError(f"bad stage {part!r} in {plan!r}: write NAME:EPOCHS with NAME one of "
                             "head, topN (N >= 1, e.g. top2), all, and EPOCHS >= 1, e.g. head:5,top2:5,all:3")
        stages.append(Stage(name, int(epochs)))
    if not stages:
        raise GraftError("empty stage plan; e.g. head:5,top2:5,all:3")
    return stages


def block_units(trunk: nn.Module) -> list[str]:
    """Names of the block units of a backbone trunk, in forward order."""
    return [name for name, module in layer_units(trunk)
            if "." in name and any(True for _ in module.parameters())]


def _trainable_units(trunk: nn.Module, top_blocks: int | None) -> set[str]:
    units = [name for name, module in layer_units(trunk) if any(True for _ in module.parameters())]
    if top_blocks is None:
        return set(units)
    if top_blocks == 0:
        return set()
    blocks = block_units(trunk)
    if top_blocks > len(blocks):
        raise GraftError(f"--stages top{top_blocks}: the backbone has only {len(blocks)} blocks (see `graft layers`)")
    first = units.index(blocks[-top_blocks])
    return set(units[first:])


def apply_stage(trunk: nn.Module, head: nn.Module, stage: Stage | None = None,
                freeze_first: int | str | None = None, always_frozen=()) -> list[str]:
    """Set ``requires_grad`` for a stage (or a freeze-first-K rule); return trainable names.

    The head always trains; units in ``always_frozen`` never do. Names returned are parameter
    names of ``trunk``.
    """
    for p in head.parameters():
        p.requires_grad_(True)
    units = [name for name, _ in layer_units(trunk)]
    if freeze_first is not None:
        trainable = set(units[frozen_count(units, freeze_first):])
    else:
        if stage is None:
            raise GraftError("apply_stage needs a stage or freeze_first")
        trainable = _trainable_units(trunk, stage.top_blocks)
    trainable -= set(always_frozen)
    for unit, module in layer_units(trunk):
        for p in module.parameters():
            p.requires_grad_(unit in trainable)
    return trainable_names(trunk)


def trainable_names(trunk: nn.Module) -> list[str]:
    """The names (``unit.parameter``, in layer-unit order) of the trunk's parameters that train
    now: what a resume checkpoint records as its stage's freeze mask."""
    return [f"{unit}.{pname}" for unit, module in layer_units(trunk)
            for pname, p in module.named_parameters() if p.requires_grad]


def frozen_count(units: list[str], freeze_first: int | str) -> int:
    """How many leading layer units ``--freeze-first`` (a count or a unit name) freezes; GraftError
    for a name the network lacks or a count beyond its layers (nothing would train but the head)."""
    if isinstance(freeze_first, str) and not freeze_first.isdigit():
        if freeze_first not in units:
            raise GraftError(f"--freeze-first {freeze_first!r}: no such layer; see `graft layers`")
        return units.index(freeze_first) + 1
    if not 0 <= int(freeze_first) <= len(units):
        raise GraftError(f"--freeze-first {freeze_first}: the network has {len(units)} layers (see `graft layers`); "
                         f"give 0..{len(units)}, or a layer name")
    return int(freeze_first)


def check_plan(plan: list[Stage], trunk: nn.Module, freeze_first: int | str | None = None) -> None:
    """Check a plan against the network before training: every ``topN`` has N blocks to
    unfreeze and ``freeze_first`` names a layer or a count within the network."""
    if freeze_first is not None:
        frozen_count([name for name, _ in layer_units(trunk)], freeze_first)
        return
    for stage in plan:
        _trainable_units(trunk, stage.top_blocks)


def set_train_mode(model: nn.Module) -> nn.Module:
    """``model.train()``, except normalisation layers whose parameters are all frozen stay in
    eval mode: their running statistics are part of the pretrained weights and must not drift
    toward a small target set's statistics while the layer is "frozen"."""
    model.train()
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            params = list(module.parameters(recurse=False))
            if params and not any(p.requires_grad for p in params):
                module.eval()
    return model


def truncated_plan(plan: list[Stage], epochs: int) -> str:
    """The plan's first ``epochs`` epochs, as a plan string (``head:20,top2:5`` cut at 23 gives
    ``head:20,top2:3``): what a final refit repeats of the epochs validation chose."""
    parts, left = [], epochs
    for stage in plan:
        if left <= 0:
            break
        parts.append(f"{stage.name}:{min(stage.epochs, left)}")
        left -= stage.epochs
    return ",".join(parts)
