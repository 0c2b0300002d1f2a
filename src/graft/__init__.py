"""graft: transfer learning for image classifiers, fast and offline on a CPU.

The public API. Names load on first use (PEP 562), so ``import graft`` and the CLI start
without torch when the work at hand does not need it.
"""
from __future__ import annotations

import importlib

__version__ = "0.1.0"

_WHERE = {
    "Backbone": "backbones", "create_backbone": "backbones", "list_backbones": "backbones",
    "register_backbone": "backbones",
    "ImageFolder": "data.folders", "load_image": "data.folders", "load_train_val": "data.folders",
    "scan_folder": "data.folders",
    "stratified_split": "data.folders",
    "DataError": "errors", "GraftError": "errors", "ImageDecodeError": "errors", "ModelError": "errors",
    "FeatureExtractor": "features.extractor", "Features": "features.extractor",
    "evaluate": "recipes.frozen", "fit_frozen": "recipes.frozen",
    "CLASSICAL_HEADS": "heads.classical", "fit_head": "heads.classical",
    "HEAD_MODULES": "heads.modules", "build_head": "heads.modules",
    "GraftModel": "artifacts.model",
    "Preprocessing": "data.preprocess",
    "FrozenFitConfig": "recipes.settings", "FinetuneConfig": "recipes.settings", "PretrainConfig": "recipes.settings",
    "AdaptConfig": "recipes.settings", "DistillConfig": "recipes.settings", "MultitaskConfig": "recipes.settings",
    "LRFindConfig": "recipes.settings",
    "finetune": "recipes.finetune", "pretrain": "recipes.pretrain", "adapt": "recipes.adapt",
    "distill": "recipes.distill", "multitask": "recipes.multitask", "find_lr": "recipes.lr_find",
    "resume": "recipes.resume",
    "ClusterHead": "clustering", "cluster": "recipes.cluster", "select": "recipes.select",
    "ClusterConfig": "recipes.settings", "SelectConfig": "recipes.settings",
}

__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name in _WHERE:
        value = getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'graft' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + __all__)
