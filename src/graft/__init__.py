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
    "evaluate": "recipes.frozen",
    "CLASSICAL_HEADS": "heads.classical", "fit_head": "heads.classical",
    "HEAD_MODULES": "heads.modules", "build_head": "heads.modules",
    "GraftModel": "artifacts.model",
    "Preprocessing": "data.preprocess",
    "resume": "recipes.resume", "ClusterHead": "clustering",
}


def _where() -> dict:
    """Public name -> its module: the names above and the public recipes' functions and Configs
    (graft.recipes.registry), read when a name is first asked for."""
    from graft.recipes.registry import recipes

    where = dict(_WHERE)
    for recipe in recipes():
        if recipe.public:
            where.update({recipe.name: recipe.module[len("graft."):], recipe.config.__name__: "recipes.settings"})
    return where


def __getattr__(name: str):
    if name == "__all__":  # PEP 562: `from graft import *` and dir() read it here, after the registry
        value = sorted(_where())
    elif name in _WHERE or name in _where():
        value = getattr(importlib.import_module(f".{_where()[name]}", __name__), name)
    else:
        raise AttributeError(f"module 'graft' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(__getattr__("__all__")))
