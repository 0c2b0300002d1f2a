"""The embedded demo dataset: scikit-learn's bundled handwritten digits written out as images."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def write_digits_dataset(root: Path, per_class: int | None = None) -> Path:
    """Write ``load_digits()`` (1797 real 8x8 digits, 10 classes) as ``root/<digit>/<n>.png``.

    Pixel values 0..16 are scaled to 0..255 and each image is enlarged 4x (nearest) so the
    files are viewable; graft resizes them to the backbone's input anyway.
    """
    from sklearn.datasets import load_digits

    root = Path(root)
    digits = load_digits()
    counts: dict[int, int] = {}
    for image, label in zip(digits.images, digits.target):
        label = int(label)
        if per_class is not None and counts.get(label, 0) >= per_class:
            continue
        n = counts.get(label, 0)
        counts[label] = n + 1
        path = root / str(label) / f"{n:04d}.png"
        if path.exists():
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        pixels = np.clip(image * (255.0 / 16.0), 0, 255).astype(np.uint8)
        Image.fromarray(pixels, mode="L").resize((32, 32), Image.Resampling.NEAREST).save(path)
    return root
