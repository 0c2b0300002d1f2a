"""Settings of ``graft pretrain --unlabelled`` (self-taught learning): its defaults, chosen by
measurement (BENCHMARKS.md, issue 28), and the options it refuses (they need labels)."""
from __future__ import annotations

from dataclasses import fields

from graft.data.folders import ImageFolder, scan_unlabelled
from graft.defaults import DEFAULT_BACKBONE
from graft.errors import DataError, GraftError

# MNIST-M 2000 unlabelled digits on this project's 2-core machine (BENCHMARKS.md, issue 28), 10-shot `graft fit`
# on mnistm-test: ImageNet features 45.5 % at 224 px (41.3 % at 96). Rotation at 96 px, top8: 5 epochs 47.0 %;
# 10 epochs 57.6 % (3 pretraining seeds x 3 labelled draws; 313-334 s a run, quiet); 15 epochs 62.3 % (one run,
# 1.5x the time). 10 keeps most of the gain well inside the 15-minute budget. At 64 px 29.2 %; SimSiam 17.5 %.
SELF_TAUGHT = {"objective": "rotation", "stages": "top8:10", "lr": 1e-3, "base_lr_factor": 0.5, "batch_size": 64,
               "image_size": 96, "val_fraction": 0.1}

MIN_IMAGES = 8  # two training batches of 2 and a validation image at the least

# Options that need labels or a labelled method: refused with --unlabelled unless left at their default.
NEEDS_LABELS = ("train_dir", "val_dir", "test_dir", "final", "exclude", "class_weight", "mixup", "cutmix",
                "transfer_layers", "transfer_from", "freeze_transferred", "augment", "augment_head_stage", "head")


def self_taught_settings(config) -> None:
    """Fill a self-taught PretrainConfig's defaults (:data:`SELF_TAUGHT`; pretrained weights of
    ``tf_efficientnet_lite0``; the kept epoch is the last, validation watches the SimSiam loss)
    and refuse, in one GraftError, options that need labels, and batches of one image."""
    defaults = {f.name: f.default for f in fields(config)}
    given = [config.flag(name) for name in NEEDS_LABELS if getattr(config, name) != defaults[name]]
    if config.sampler != "shuffle":
        given.append("--sampler")
    if given:
        raise GraftError(f"--unlabelled trains without labels: {', '.join(given)} need labels (a labelled "
                         "method); leave them out")
    if config.lr == "auto":
        raise GraftError("--unlabelled has no --lr auto (the range test needs labels): give a number")
    for name, value in SELF_TAUGHT.items():
        if getattr(config, name) is None:
            setattr(config, name, value)
    if config.batch_size < 2:  # SimSiam's predictor and the trunk's BatchNorm layers train on batch statistics
        raise GraftError(f"--batch-size {config.batch_size}: self-taught pretraining trains BatchNorm layers, "
                         "which need at least 2 images a batch")
    config.backbone = config.backbone or DEFAULT_BACKBONE
    config.pretrained = True
    config.monitor, config.mode = "val_loss", "min"


def unlabelled_folder(path, why: str = "self-taught pretraining needs unlabelled images") -> ImageFolder:
    """The unlabelled folder ``path``, any layout, listed (nothing decoded); DataError in one line
    naming ``--unlabelled`` when it is missing, a file, holds no files, or fewer than
    :data:`MIN_IMAGES` (``why``: what needs them, for the first three)."""
    folder = scan_unlabelled(path, why, flag="--unlabelled")
    if len(folder) < MIN_IMAGES:
        raise DataError(f"--unlabelled {folder.root} holds {len(folder)} image file(s): self-taught pretraining "
                        f"needs at least {MIN_IMAGES}")
    return folder
