"""The names of graft's training augmentations (torch-free: the command line reads them)."""
from __future__ import annotations

from graft.errors import GraftError

# none; crop = random-resized-crop (scale 0.35-1) alone, for images a mirror changes (digits, text);
# crop-flip = crop + horizontal flip; randaugment = crop-flip + RandAugment (Cubuk et al. 2020; 2 ops,
# magnitude 9). Built in graft.data.datasets.ImageDataset.
AUGMENTATIONS = ("none", "crop", "crop-flip", "randaugment")


def augmentation_name(augment) -> str:
    """``True``/``False`` (older configs, the library's shorthand) or a name from AUGMENTATIONS."""
    if augment is True:
        return "crop-flip"
    if augment is False or augment is None:
        return "none"
    if augment not in AUGMENTATIONS:
        raise GraftError(f"unknown augmentation {augment!r}: {', '.join(AUGMENTATIONS)}")
    return augment
