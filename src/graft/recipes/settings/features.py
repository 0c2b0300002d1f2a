"""Settings of the recipes that work on frozen features: fit, fewshot, advise / auto."""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from graft.config import Config, comma_list, setting
from graft.defaults import BATCH_SIZE, DEFAULT_BACKBONE, ENGINE
from graft.errors import GraftError
from graft.heads.registry import HEAD_NAMES
from graft.recipes.settings.names import DEFAULT_VAL_FRACTION


@dataclass
class FrozenFitConfig(Config):
    """``graft fit``: frozen backbone features + a classical head (scikit-learn)."""

    COMMAND: ClassVar[str] = "fit"
    # fields its command does not show
    CLI_HIDDEN: ClassVar[tuple[str, ...]] = ()
    # the command's --help
    HELP: ClassVar[str] = "Frozen features + a classical head (C chosen by cross-validation) -> a run folder."

    PATHS: ClassVar[tuple[str, ...]] = ("train_dir", "val_dir", "test_dir", "exclude")

    train_dir: str = setting(None, "Training class-folder tree.", argument="data", path=True)
    val_dir: str | None = setting(None, "Validation class-folder tree.", flag="--val", path=True)
    val_fraction: float | None = setting(None, "Hold out this stratified fraction of DATA (default 0.2 when --val "
                                               "is not given).", flag="--val-split", low=0, high=1, open=True)
    test_dir: str | None = setting(None, "A labelled test folder, scored once at the end with the model validation "
                                         "chose (reports in RUN/test/; metrics.json keeps validation and test apart).",
                                   flag="--test", path=True)
    backbone: str = setting(DEFAULT_BACKBONE, "Backbone: a registered name, a timm architecture, or a graft run "
                                              "folder.", short="-b")
    weights: str | None = setting(None, "Local .safetensors/.pth weights for a timm architecture.", path=True)
    layer: str | None = setting(None, "Cut layer: name or index from `graft layers` (default: final pooled).")
    image_size: int | None = setting(None, "Input resolution (default: the weights' own).", low=32)
    head: str = setting("logreg", "Classical head on the features (C by cross-validation).", choices=HEAD_NAMES)
    class_weight: str | None = setting(None, "Weigh each class by n / (classes x its count), as scikit-learn's "
                                             "'balanced', so a small class is not ignored.", choices=("balanced",))
    final: bool = setting(False, "Refit the head on training + validation images with the C validation chose, "
                                 "before saving.")
    shots: int | None = setting(None, "Fit on this many training images per class (seeded), to see what K labels "
                                      "buy.", low=1)
    exclude: str | None = setting(None, "Leave out the images a CSV lists (graft audit's RUN/audit.csv, or an "
                                        "edited copy); rows with a 'relabel' class keep the image with that class.",
                                  path=True)
    seed: int = setting(0, "Random seed (split, subsets).")
    engine: str = setting(ENGINE, "Frozen inference engine (auto: ONNX Runtime when installed).",
                          choices=("auto", "onnx", "torch"))
    batch_size: int = setting(BATCH_SIZE, "Images per batch.", low=1)
    cache: bool = setting(True, "Do not read or write the feature cache.", flag="--no-cache")

    def __post_init__(self):
        if self.train_dir is None:
            raise GraftError(f"missing {self.flag('train_dir')}: the labelled training folder")
        if self.val_dir is None and self.val_fraction is None:
            self.val_fraction = DEFAULT_VAL_FRACTION
        if self.layer is not None and not str(self.layer).strip():
            raise GraftError("--layer must name a layer (or an index) from `graft layers`; leave it out for the "
                             "final pooled features")
        super().__post_init__()
        from graft.heads.classical import check_head_options  # numpy, not torch: read when a fit is set up

        check_head_options(self.head, self.class_weight)  # a class weighting the head cannot take


@dataclass
class FewshotConfig(Config):
    """``graft fewshot``: N-way K-shot episodes on frozen features (SimpleShot's centred,
    L2-normalised prototypes, Wang et al. 2019, and logistic regression)."""

    PATHS: ClassVar[tuple[str, ...]] = ("data", "weights")
    COMMAND: ClassVar[str] = "fewshot"

    data: str = setting(None, "Class-folder tree to draw episodes from.", argument="data", path=True)
    ways: int = setting(5, "Classes per episode.", low=2)
    shots: str = setting("1,5", "Labelled images per class, comma-separated.")
    episodes: int = setting(200, "Episodes per (shots, head).", low=1)
    queries: int = setting(15, "Query images per class and episode.", low=1)
    heads: str = setting("prototype,logreg", "Heads, comma-separated: prototype, logreg.")
    backbone: str = setting(DEFAULT_BACKBONE, "Backbone: a registered name, a timm architecture, or a graft run "
                                              "folder.", short="-b")
    weights: str | None = setting(None, "Local .safetensors/.pth weights for a timm architecture.", path=True)
    layer: str | None = setting(None, "Cut layer: name or index from `graft layers` (default: final pooled).")
    image_size: int | None = setting(None, "Input resolution (default: the weights' own).", low=32)
    seed: int = setting(0, "Random seed of the episodes.")

    def __post_init__(self):
        if self.data is None:
            raise GraftError("fewshot needs a class-folder tree (data)")
        try:
            self.shots = ",".join(str(int(k)) for k in comma_list(self.shots) or [])
        except ValueError:
            raise GraftError(f"--shots {self.shots!r}: write numbers separated by commas, e.g. 1,5,10") from None
        super().__post_init__()


@dataclass
class AdviseConfig(Config):
    """``graft advise`` / ``graft auto``: measure the data (size, resolution, similarity to
    ImageNet, LogME of candidate backbones and layers) and choose a strategy."""

    PATHS: ClassVar[tuple[str, ...]] = ("data", "val_dir", "unlabelled_dir")
    COMMAND: ClassVar[str] = "advise"

    data: str = setting(None, "Training class-folder tree.", argument="data", path=True)
    val_dir: str | None = setting(None, "Validation class-folder tree.", flag="--val", path=True)
    val_fraction: float | None = setting(None, "Hold out this stratified fraction of DATA.", flag="--val-split",
                                         low=0, high=1, open=True)
    backbones: str | None = setting(None, "Backbones to rank, comma-separated (default tf_efficientnet_lite0; "
                                          "tf_efficientnet_lite2 too costs time).")
    layers: str | None = setting(None, "Inner layers of the first backbone to rank too, comma-separated (default "
                                       "blocks.5,blocks.4).")
    sample_per_class: int = setting(25, "Images per class measured (LogME and LEEP settle with a few dozen).", low=2)
    budget: float = setting(10.0, "graft auto: estimated minutes its checks on validation may take; fine-tuning "
                                  "and self-taught pretraining are tried only when they fit (0: frozen candidates "
                                  "only).", low=0,
                          high=7 * 24 * 60)  # a week
    unlabelled_dir: str | None = setting(None, "Unlabelled images (any layout, folder names ignored; DATA itself "
                                               "may be given): where DATA is unlike ImageNet, the self-taught plan "
                                               "pretrains on them first (graft pretrain --unlabelled), within "
                                               "--budget.", flag="--unlabelled", path=True)
    seed: int = setting(0, "Random seed of the sample and split.")

    def __post_init__(self):
        if self.data is None:
            raise GraftError("advise needs a class-folder tree (data)")
        if self.val_dir and self.val_fraction:
            raise GraftError("--val and --val-split: choose one")
        super().__post_init__()
