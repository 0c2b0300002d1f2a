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


def demo(out, data=None, *, backbone: str | None = None, image_size: int | None = None, progress: bool = True):
    """``graft demo``: the frozen path on real data, end to end (features, logistic regression,
    report, pictures). Without ``data``, scikit-learn's digits are written to graft's cache first
    and read at 128 px. Returns ``(data folder, FitResult)``."""
    from graft.defaults import DEFAULT_BACKBONE
    from graft.features.cache import cache_root
    from graft.recipes.frozen import fit_frozen

    if data is None:
        data = write_digits_dataset(cache_root() / "demo" / "sklearn-digits")
        image_size = image_size or 128
    return Path(data), fit_frozen(data, out, val_fraction=0.25, backbone=backbone or DEFAULT_BACKBONE,
                                  image_size=image_size, progress=progress)
