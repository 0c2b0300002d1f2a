"""Pretrained backbones: a registry of weight sources behind one :class:`Backbone` contract."""
from graft.backbones import efficientnet_lite  # noqa: F401  (registers tf_efficientnet_lite0/1/2)
from graft.backbones.backbone import Backbone, LayerInfo, PooledFeatures, layer_units, state_mismatch, state_sha256
from graft.backbones.registry import DEFAULT_BACKBONE, create_backbone, list_backbones, register_backbone

__all__ = [
    "Backbone",
    "DEFAULT_BACKBONE",
    "LayerInfo",
    "PooledFeatures",
    "create_backbone",
    "layer_units",
    "list_backbones",
    "register_backbone",
    "state_mismatch",
    "state_sha256",
]
