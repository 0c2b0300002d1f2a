"""``graft export``: a saved model as ONNX, verified against torch on the spot."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .model import GraftModel
from .onnx_io import ort_session


def export_and_verify(run_dir, out=None, atol: float = 1e-4) -> tuple[Path, float]:
    model = GraftModel.load(run_dir)
    run_dir = Path(run_dir)
    path = Path(out) if out else run_dir / "model.onnx"
    model.export_onnx(path)
    size = model.preprocessing.size
    images = torch.from_numpy(np.random.default_rng(0).uniform(-1, 1, (2, 3, size, size)).astype(np.float32))
    with torch.inference_mode():
        expected = model(images).numpy()
    got = ort_session(path).run(["logits"], {"images": images.numpy()})[0]
    max_diff = float(np.abs(got - expected).max())
    if max_diff > atol:
        from .errors import ModelError

        raise ModelError(f"exported {path} differs from torch by {max_diff:.2e} (> {atol:g})")
    return path, max_diff
