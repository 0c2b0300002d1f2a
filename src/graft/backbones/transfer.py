"""Layer transfer: copy some layers' weights from a source network into a freshly initialised
network of the same architecture, and leave the rest to be learned.

``first:K`` copies the first K layers (for images the early layers carry the general
features: edges, textures), ``last:K`` the last K, and ``NAME[,NAME...]`` the named layers (a
name also selects the layers below it: ``blocks.1`` is ``blocks.1.0`` and ``blocks.1.1``).
Layers are graft's layer units (``graft layers``). The copy is bit for bit: parameters and
buffers (BatchNorm statistics included).
"""
from __future__ import annotations

import torch
from torch import nn

from graft.backbones import layer_units
from graft.errors import GraftError


def resolve_transfer(spec: str, model: nn.Module) -> list[str]:
    """The layer units named by ``spec`` (``first:K``, ``last:K`` or names), in network order."""
    units = [name for name, _ in layer_units(model)]
    spec = (spec or "").strip()
    kind, _, count = spec.partition(":")
    if kind in ("first", "last") and count:
        if not count.isdigit() or not 1 <= int(count) <= len(units):
            raise GraftError(f"--transfer-layers {spec}: K must be 1..{len(units)} (the network has {len(units)} "
                             "layers; see `graft layers`)")
        k = int(count)
        return units[:k] if kind == "first" else units[-k:]
    chosen = []
    for name in filter(None, (part.strip() for part in spec.split(","))):
        matching = [u for u in units if u == name or u.startswith(name + ".")]
        if not matching:
            raise GraftError(f"--transfer-layers: the architecture has no layer {name!r}; see `graft layers` "
                             f"(e.g. {', '.join(units[:3])}, ...)")
        chosen.extend(u for u in matching if u not in chosen)
    if not chosen:
        raise GraftError("--transfer-layers needs first:K, last:K or layer names")
    return [u for u in units if u in chosen]


def copy_layers(source: nn.Module, target: nn.Module, units: list[str]) -> list[str]:
    """Copy the parameters and buffers of ``units`` from ``source`` into ``target``; return the
    tensor names copied."""
    source_modules, target_modules = dict(source.named_modules()), dict(target.named_modules())
    copied = []
    with torch.no_grad():
        for unit in units:
            if unit not in target_modules or unit not in source_modules:
                raise GraftError(f"layer {unit!r} is missing from the source or the target network")
            mine, theirs = target_modules[unit].state_dict(), source_modules[unit].state_dict()
            for key, tensor in mine.items():
                if key not in theirs or theirs[key].shape != tensor.shape:
                    raise GraftError(f"cannot transfer {unit}.{key}: the source network's layer has another shape")
                tensor.copy_(theirs[key])
                copied.append(f"{unit}.{key}")
    return copied


def transferred_network(backbone: str, layers: str, *, donor: str | None = None, weights: str | None = None,
                        pretrained: bool = True):
    """A freshly initialised ``backbone`` holding ``layers`` (a :func:`resolve_transfer` spec)
    copied from ``donor`` (a backbone name or graft run folder; default ``backbone`` itself with
    ``weights``). The network trained is always ``backbone``'s architecture; a donor of another
    architecture works when those layers exist in both with the same shapes, else GraftError
    naming both. The donor's preprocessing comes along (its layers expect its input scaling).
    ``pretrained=False`` builds the donor untrained: a quick check that the copy fits."""
    from graft.backbones import create_backbone

    source = create_backbone(donor or backbone, weights=None if donor else weights, pretrained=pretrained)
    architecture = create_backbone(backbone, weights=weights, pretrained=False).architecture if donor \
        else source.architecture
    fresh = create_backbone(architecture, pretrained=False)
    try:
        copy_layers(source.model, fresh.model, resolve_transfer(layers, fresh.model))
    except GraftError as exc:
        if source.architecture == architecture:
            raise
        raise GraftError(f"--transfer-from {donor} is a {source.architecture} and --backbone {backbone} a "
                         f"{architecture}: {exc}; copy layers that both have with the same shapes (`graft layers`), "
                         "or a --transfer-from of the same architecture") from None
    fresh.preprocessing = source.preprocessing
    fresh.weights_source = f"{source.weights_source} (layers {layers}), the rest random"
    return fresh
