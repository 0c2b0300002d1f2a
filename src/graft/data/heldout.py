"""A labelled test folder held out from a training command: scanned against the training
classes and checked against the training and validation folders, before anything is written."""
from __future__ import annotations

import os

from graft.data.folders import ImageFolder, scan_folder, warn_unscored_classes
from graft.data.overlap import shared_images, warn_trained_on
from graft.errors import DataError


def load_test(test_dir, train: ImageFolder, val: ImageFolder | None = None, *, final: bool = False) -> ImageFolder:
    """A labelled test folder scored against the training classes. Refused (DataError) when it
    is the training or the validation folder, or, with ``final`` (the model then trains on the
    validation images too), when it shares images with validation; warned when it shares
    images with training or validation (by content: copies, links) or lacks classes."""
    test = scan_folder(test_dir, classes=train.classes)
    for what, folder in (("training", train), ("validation", val)):
        if folder is not None and os.path.samefile(test.root, folder.root):
            raise DataError(f"test folder is the {what} folder: {test.root}: a test score needs images the model "
                            "neither trained on nor was chosen on")
    warn_unscored_classes(test, "test")
    if val is not None and final:
        shared = shared_images(test.paths, val.paths)
        if shared:
            raise DataError(f"--final trains on the validation images, and {len(shared)} of {len(test)} test images "
                            f"are among them (same content), e.g. {shared[0][0]} = {shared[0][1]}: give a test "
                            "folder without validation images, or leave out --final")
    warn_trained_on(test.paths, "test", train.paths)
    if val is not None and not final:
        warn_trained_on(test.paths, "test", val.paths, "validation images, which chose the model")
    return test
