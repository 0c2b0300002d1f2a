"""The one place graft keeps what it can recompute: ``$GRAFT_CACHE_DIR`` or ``~/.cache/graft``.

Everything cached lives under this folder: extracted features (``features/``), the feature
networks', models' and optimised ONNX graphs (``onnx/``, see :func:`graft._io.onnx.onnx_cache`),
source records and trunks, the demo's data. Deleting it only costs recomputation.
"""
from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    """``$GRAFT_CACHE_DIR`` (``~`` expanded) when set and not empty, else ``~/.cache/graft``."""
    root = os.environ.get("GRAFT_CACHE_DIR")
    return Path(root).expanduser() if root else Path.home() / ".cache" / "graft"
