"""Settings of the commands that work before the labels (issue 25): cluster, select."""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from graft.config import Config, setting
from graft.defaults import DEFAULT_BACKBONE
from graft.errors import GraftError

_STRATEGIES = ("typical-uncertain", "typical", "uncertain")  # graft.clustering.STRATEGIES (settings import no numpy)


@dataclass
class _Features(Config):
    """What every command on frozen features of a folder shares."""

    backbone: str = setting(DEFAULT_BACKBONE, "Backbone: a registered name, a timm architecture, or a graft run "
                                              "folder.", short="-b")
    layer: str | None = setting(None, "Cut layer: name or index from `graft layers` (default: final pooled).")
    image_size: int | None = setting(None, "Input resolution (default: the weights' own).", low=32)
    seed: int = setting(0, "Random seed.")
    engine: str = setting("auto", "Frozen inference engine (auto: ONNX Runtime when installed).",
                          choices=("auto", "onnx", "torch"))
    batch_size: int = setting(32, "Images per batch.", low=1)
    cache: bool = setting(True, "Do not read or write the feature cache.", flag="--no-cache")


@dataclass
class ClusterConfig(_Features):
    """``graft cluster``: self-taught clustering of any image folder on frozen features."""

    COMMAND: ClassVar[str] = "cluster"
    HELP: ClassVar[str] = ("Group the images of DIR (flat or nested; class folders, if any, only score the result) "
                           "with a neighbourhood-consistency head on frozen features (SCAN) -> RUN/clusters.csv, "
                           "report.html.")
    PATHS: ClassVar[tuple[str, ...]] = ("data", "export")

    data: str = setting(None, "Folder of images (any layout).", argument="dir", path=True)
    k: int | None = setting(None, "Clusters to make (default: an eigengap estimate x 1.5, over-clustered on "
                                  "purpose: merging two clusters by eye is quicker than splitting one).",
                            flag="-k", low=2)
    heads: int = setting(20, "Heads trained from different random starts; the lowest-loss one is kept.", low=1)
    export: str | None = setting(None, "Also lay the images out as FOLDER/<cluster>/<image> links (copies where "
                                       "links fail), which `graft fit` reads; FOLDER must be new or empty.",
                                 path=True)

    def __post_init__(self):
        if self.data is None:
            raise GraftError("cluster needs a folder of images (DIR)")
        super().__post_init__()


@dataclass
class SelectConfig(_Features):
    """``graft select``: which images of a pool to label next."""

    COMMAND: ClassVar[str] = "select"
    HELP: ClassVar[str] = ("Rank the images of POOL to label next: typical and diverse first without labels "
                           "(TypiClust); with --labelled, what the labels do not cover yet -> RUN/selected.csv, "
                           "report.html.")
    PATHS: ClassVar[tuple[str, ...]] = ("pool", "labelled")

    pool: str = setting(None, "Folder of unlabelled images (any layout; folder names ignored).", argument="pool",
                        path=True)
    n: int = setting(None, "Images to pick.", flag="-n", low=1)
    labelled: str | None = setting(None, "Class folders of the images labelled so far.", path=True)
    strategy: str = setting("typical-uncertain", "With --labelled: from each k-means cluster no label covers yet, "
                                                 "the image that is typical and that the current model (logistic "
                                                 "regression) is unsure of; typical (the most typical: TypiClust); "
                                                 "uncertain (the least sure in each k-means cluster of the pool).",
                            choices=_STRATEGIES)

    def __post_init__(self):
        if self.pool is None:
            raise GraftError("select needs a folder of images to pick from (POOL)")
        if self.n is None:
            raise GraftError("select needs -n: how many images to pick")
        super().__post_init__()
