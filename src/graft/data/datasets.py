"""Torch datasets over a scanned folder: decoded, preprocessed, optionally augmented images."""
from __future__ import annotations

import warnings

import torch
from torch.utils.data import Dataset

from graft._io.progress import progress_bar
from graft.data.augmentation import augmentation_name
from graft.data.folders import ImageFolder, load_image
from graft.data.preprocess import Preprocessing
from graft.errors import ImageDecodeError


class ImageDataset(Dataset):
    """Decoded, preprocessed images of an ImageFolder.

    ``augment``: ``none``; ``crop`` = random-resized-crop (scale 0.35-1); ``crop-flip`` = crop +
    horizontal flip; ``randaugment`` = crop-flip + RandAugment (Cubuk et al. 2020; 2 ops, magnitude 9).
    Random draws use torch's global RNG, which checkpoints save, so a resumed run sees the
    same augmentations.
    """

    def __init__(self, folder: ImageFolder, preprocessing: Preprocessing, augment="none"):
        self.records = folder.records
        self.preprocessing = preprocessing
        self.augment = augmentation_name(augment)
        if self.augment != "none":
            from torchvision.transforms import v2

            steps = [v2.RandomResizedCrop(preprocessing.size, scale=(0.35, 1.0), antialias=True)]
            if self.augment != "crop":
                steps.append(v2.RandomHorizontalFlip())
            if self.augment == "randaugment":
                steps.append(v2.RandAugment(num_ops=2, magnitude=9))
            self.random = v2.Compose(steps)

    def __len__(self):
        return len(self.records)

    def __getitem__(self, index):
        record = self.records[index]
        image = load_image(record.path, min_side=self.preprocessing.resize_size)
        if self.augment != "none":
            array = self.preprocessing.normalize(self.random(image))
        else:
            array = self.preprocessing.to_array(image)
        return torch.from_numpy(array), record.label


# The check decodes JPEGs in draft mode (DCT scaling still reads every coded block, so damage is
# found as in a full decode): a 12000 x 9000 photo is checked at 1500 x 1125, fast and within the
# pixel limit, as the training decode (min_side = the network's resize) reads it.
CHECK_MIN_SIDE = 224


def readable_images(folder: ImageFolder, strict: bool, progress: bool) -> tuple[ImageFolder, list[dict]]:
    """``(folder without the images that do not decode, [{"path", "reason"}, ...])``.

    Every image is decoded once before training starts, so a bad file is reported (a warning
    naming it, and the skipped list of metrics.json) instead of failing an epoch; ``strict``
    raises :class:`~graft.errors.ImageDecodeError` at the first one instead.
    """
    keep, skipped = [], []
    bar = progress_bar(len(folder), f"checking {folder.root.name}", "img", progress)
    for i, record in enumerate(folder.records):
        try:
            load_image(record.path, min_side=CHECK_MIN_SIDE)
            keep.append(i)
        except ImageDecodeError as exc:
            if strict:
                raise
            warnings.warn(f"skipping {exc.path}: {exc.reason}")
            skipped.append({"path": exc.path, "reason": exc.reason})
        bar.update(1)
    bar.close()
    return folder.subset(keep), skipped
