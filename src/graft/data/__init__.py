"""Data: class-folder scanning and stratified splits (:mod:`.folders`), robust RGB decoding
(:mod:`.decode`), the input recipe (:mod:`.preprocess`), augmentation names
(:mod:`.augmentation`) and torch datasets (:mod:`.datasets`). Names load on first use, so the
command line starts without numpy or PIL."""
from __future__ import annotations

import importlib

_WHERE = {"ImageFolder": "folders", "Record": "folders", "load_train_val": "folders", "scan_folder": "folders",
          "scan_unlabelled": "folders", "load_image": "decode"}
__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name in _WHERE:
        return getattr(importlib.import_module(f"graft.data.{_WHERE[name]}"), name)
    raise AttributeError(f"module 'graft.data' has no attribute {name!r}")
