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
    "ImageFolder": "data", "load_image": "data", "load_train_val": "data", "scan_folder": "data",
    "stratified_split": "data",
    "DataError": "errors", "GraftError": "errors", "ImageDecodeError": "errors", "ModelError": "errors",
    "FeatureExtractor": "features", "Features": "features",
    "evaluate": "fit", "fit_frozen": "fit",
    "CLASSICAL_HEADS": "classical", "fit_head": "classical",
    "HEAD_MODULES": "heads", "build_head": "heads",
    "GraftModel": "model",
    "Preprocessing": "preprocess",
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
