"""Settings of the commands that look at data before (or instead of) training on it
(issue 25): ``graft audit`` and ``graft zeroshot``."""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from graft.config import Config, setting
from graft.defaults import DEFAULT_BACKBONE
from graft.errors import GraftError


@dataclass
class AuditConfig(Config):
    """``graft audit``: likely wrong labels, copies and leaks, outliers, odd images, small classes."""

    COMMAND: ClassVar[str] = "audit"
    HELP: ClassVar[str] = ("Find likely wrong labels, exact and near copies (across classes and the --val / --test "
                           "folders: leaks), outliers, tiny or extreme images and small classes, on cached frozen "
                           "features -> RUN/audit.csv, report.html. No file is moved or changed.")
    PATHS: ClassVar[tuple[str, ...]] = ("train_dir", "val_dir", "test_dir", "weights")

    train_dir: str = setting(None, "Class-folder tree to audit.", argument="data", path=True)
    val_dir: str | None = setting(None, "A validation class-folder tree: audited too, and copies shared with DATA "
                                        "are leaks.", flag="--val", path=True)
    test_dir: str | None = setting(None, "A test class-folder tree: as --val.", flag="--test", path=True)
    label_threshold: float = setting(0.075, "Flag a label when the out-of-fold probability of the given class "
                                            "(logistic regression and 10 neighbours, averaged) is below this.",
                                     low=0, high=1)
    label_method: str = setting("threshold", "threshold (measured best), or confident-learning (cleanlab's "
                                             "find_label_issues; pip install 'graft-vision[audit]').",
                                choices=("threshold", "confident-learning"))
    copy_similarity: float = setting(0.8, "Feature cosine (centred) from which a pair is checked for a near copy.",
                                     low=-1, high=1)
    pixel_agreement: float = setting(0.95, "Thumbnail correlation that confirms a near copy.", low=-1, high=1)
    min_side: int = setting(64, "Images with a shorter side below this (px) are listed as tiny.", low=1)
    max_aspect: float = setting(4.0, "Images longer than this times their width (or wider) are listed.", low=1)
    folds: int = setting(5, "Cross-validation folds of the out-of-fold probabilities.", low=2)
    backbone: str = setting(DEFAULT_BACKBONE, "Backbone: a registered name, a timm architecture, or a graft run "
                                              "folder.", short="-b")
    weights: str | None = setting(None, "Local .safetensors/.pth weights for a timm architecture.", path=True)
    layer: str | None = setting(None, "Cut layer: name or index from `graft layers` (default: final pooled).")
    image_size: int | None = setting(None, "Input resolution (default: the weights' own).", low=32)
    seed: int = setting(0, "Random seed (folds).")
    batch_size: int = setting(32, "Images per batch.", low=1)
    cache: bool = setting(True, "Do not read or write the feature cache.", flag="--no-cache")

    def __post_init__(self):
        if self.train_dir is None:
            raise GraftError(f"missing {self.flag('train_dir')}: the class-folder tree to audit")
        super().__post_init__()


@dataclass
class ZeroshotConfig(Config):
    """``graft zeroshot``: a classifier with no training image, from the backbone's own
    ImageNet-1k classifier and the WordNet hierarchy."""

    COMMAND: ClassVar[str] = "zeroshot"
    HELP: ClassVar[str] = ("A model with no training image: each class name's WordNet synset, the ImageNet classes "
                           "beneath it, their probabilities summed (the backbone's own ImageNet classifier) -> a "
                           "run folder that predict, evaluate, serve and export use.")
    PATHS: ClassVar[tuple[str, ...]] = ("weights",)

    classes: str = setting(None, "Class names, comma-separated; NAME=WNID picks a sense (e.g. bee=n02206856).")
    backbone: str = setting(DEFAULT_BACKBONE, "Backbone with its ImageNet-1k classifier: a registered name or a "
                                              "timm architecture.", short="-b")
    weights: str | None = setting(None, "Local .safetensors/.pth weights for a timm architecture.", path=True)

    def __post_init__(self):
        if not self.classes or not str(self.classes).strip(",").strip():
            raise GraftError("--classes names no class: give names separated by commas, e.g. --classes ant,bee")
        super().__post_init__()
