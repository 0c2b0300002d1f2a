"""The advisor's candidate plans: what ``graft auto`` may score on validation, what each costs,
and in which order each of the seeds' quadrants expects them to do best."""
from __future__ import annotations

from dataclasses import dataclass
from typing import cast

from graft.recipes.settings import DEFAULT_BACKBONE
from graft.recipes.settings.selftaught import SELF_TAUGHT

STAGES_FOR = {"finetune-top": "head:10,top2:3", "finetune-all": "head:10,all:3"}
SELF_TAUGHT_PLAN = "self-taught"  # graft pretrain --unlabelled, then graft fit --backbone on its run
# Plans in the order each quadrant expects them to do best (bench_advisor.py, BENCHMARKS.md). Self-taught
# pretraining exists only where the data is unlike ImageNet and --unlabelled images are given; it comes
# first there, as issue 28's premise has it (it pays where the images are unlike ImageNet's).
ORDER = {("small", "similar"): ("finetune-top", "frozen-last", "frozen-inner"),
         ("small", "different"): (SELF_TAUGHT_PLAN, "frozen-inner", "finetune-top", "frozen-last"),
         ("large", "similar"): ("finetune-all", "frozen-last", "frozen-inner"),
         ("large", "different"): (SELF_TAUGHT_PLAN, "finetune-all", "frozen-inner", "frozen-last")}
CHECKED = 2  # plans auto checks on validation besides the defaults
_DEFAULT_SECONDS_PER_IMAGE = 0.02  # lite0, 224 px, cold, 2 cores (BENCHMARKS.md); used when all was cached
# A training image in an epoch that trains backbone layers costs this many frozen passes (forward
# + backward through the top blocks or all); eager torch training runs _TORCH times slower per
# image than the ONNX extraction measured: from BENCHMARKS.md's fine-tuning timings.
_EPOCH_COST = {"top": 2.0, "all": 3.0}
_TORCH = 1.5
# Self-taught pretraining decodes, crops and colour-jitters each view on the fly; that part does not
# shrink with px^2 as the network's does. Calibrated on the quiet default runs of
# bench/bench_selftaught.py (1800 MNIST-M digits train, 200 validate, 96 px, 10 epochs): 29-31 s an
# epoch, 316-334 s a run (BENCHMARKS.md, issue 28), with the default extraction rate.
_VIEW_SECONDS = 0.004
_RUN_SECONDS = 20  # building the network and writing a run folder, as a fine-tuning plan's


@dataclass
class Measurement:
    backbone: str
    layer: str | None
    image_size: int  # input px
    logme: float
    dim: int
    seconds_per_image: float | None = None  # cold extraction; None when it came from the cache


@dataclass
class Plan:
    """One candidate: ``defaults`` (``graft fit`` as is), ``frozen-last``, ``frozen-inner``,
    ``finetune-top`` or ``finetune-all``."""

    name: str
    backbone: str
    layer: str | None = None
    head: str = "logreg"
    image_size: int | None = None  # None: the backbone's own
    stages: str | None = None  # fine-tuning plans only
    logme: float | None = None
    estimated_seconds: float = 0.0
    unlabelled: str | None = None  # self-taught only: the folder pretrained on, and its image count
    unlabelled_images: int = 0

    @property
    def frozen(self) -> bool:
        """Scored by ``fit_frozen`` (the self-taught plan too, on its pretrained run)."""
        return self.stages is None

    @property
    def trains(self) -> bool:
        """Trains a network (fine-tuning, or the self-taught pretraining): checked only within the budget."""
        return not self.frozen or self.unlabelled is not None

    def pretrain_command(self, out) -> list[str] | None:
        """The self-taught plan's first command (None for the others): its run is ``<out>-selftaught``."""
        if self.unlabelled is None:
            return None
        arch = ["--arch", self.backbone] if self.backbone != DEFAULT_BACKBONE else []
        return ["graft", "pretrain", "--unlabelled", self.unlabelled, *arch, "-o", f"{out}-selftaught"]

    def settings(self) -> dict:
        """Keywords for ``fit_frozen`` (frozen plans) or ``finetune``."""
        extra = {"layer": self.layer, "head": self.head} if self.frozen else {"stages": self.stages}
        return {"backbone": self.backbone, "image_size": self.image_size, **extra}

    def command(self, data, val_dir, val_fraction, out) -> list[str]:
        command = ["graft", "fit" if self.frozen else "finetune", str(data)]
        command += ["--val", str(val_dir)] if val_dir else (["--val-split", str(val_fraction)] if val_fraction else [])
        if self.unlabelled is not None:
            command += ["--backbone", f"{out}-selftaught"]
        elif self.backbone != DEFAULT_BACKBONE:
            command += ["--backbone", self.backbone]
        if self.frozen:
            command += (["--layer", self.layer] if self.layer else []) + \
                       (["--head", self.head] if self.head != "logreg" else [])
        else:
            command += ["--stages", self.stages]
        return command + (["--image-size", str(self.image_size)] if self.image_size else []) + ["-o", str(out)]

    def describe(self) -> str:
        if self.unlabelled is not None:
            return (f"{self.name} ({self.backbone} pretrained on {self.unlabelled_images} unlabelled images, "
                    f"{SELF_TAUGHT['objective']} {SELF_TAUGHT['stages']} at {SELF_TAUGHT['image_size']} px, then its "
                    f"last layer + {self.head})")
        what = (f"{self.layer or 'last layer'} + {self.head}" if self.frozen else f"fine-tune {self.stages}")
        return f"{self.name} ({self.backbone}, {what}, {self.image_size or 'native'} px)"


def stage_cost(stages: str, n_train: int, n_val: int) -> float:
    """Image passes a fine-tuning plan costs: a head stage runs the frozen base once over training
    and validation images; an epoch that trains backbone layers runs forward and backward over
    the training images (augmented) and forward over the validation images."""
    cost = 0.0
    for stage in stages.split(","):
        name, _, epochs = stage.partition(":")
        if name == "head":
            cost += n_train + n_val
        else:
            cost += int(epochs) * (n_train * _EPOCH_COST["all" if name == "all" else "top"] + n_val)
    return cost


def self_taught_seconds(seconds_per_image: float, n_unlabelled: int) -> float:
    """Estimated seconds of ``graft pretrain --unlabelled`` with :data:`SELF_TAUGHT`'s settings on
    ``n_unlabelled`` images, from the frozen extraction's ``seconds_per_image`` at its px: as a
    fine-tuning plan (eager torch, forward and backward), plus each view's decoding and jitter,
    validation (rotation: every held-out image in four turns) and the closing BatchNorm pass."""
    n_val = max(1, round(cast(float, SELF_TAUGHT["val_fraction"]) * n_unlabelled))
    n_train = n_unlabelled - n_val
    views = 2 if SELF_TAUGHT["objective"] == "simsiam" else 1
    step = _TORCH * seconds_per_image
    seconds = _RUN_SECONDS + n_train * step  # + the BatchNorm pass over the plain training images
    for stage in str(SELF_TAUGHT["stages"]).split(","):
        name, _, epochs = stage.partition(":")
        train = step * (1 if name == "head" else _EPOCH_COST["all" if name == "all" else "top"]) + _VIEW_SECONDS
        seconds += int(epochs) * (views * n_train * train + 4 * n_val * step)
    return seconds


def candidate_plans(measured: list[Measurement], natives: dict, small: int | None, n_train: int, n_val: int,
                    n_sample: int, unlabelled: tuple[str, int] | None = None) -> list[Plan]:
    """Every candidate plan the measurements support, with its estimated seconds; ``unlabelled``
    (folder, image count), given only where the data is unlike ImageNet, adds the self-taught plan."""
    n_all = n_train + n_val
    def rate(backbone, layer, px):
        found = [m.seconds_per_image for m in measured
                 if (m.backbone, m.layer, m.image_size) == (backbone, layer, px) and m.seconds_per_image]
        return found[0] if found else _DEFAULT_SECONDS_PER_IMAGE * (px / 224) ** 2

    def frozen(name, m: Measurement | None, backbone=DEFAULT_BACKBONE, layer=None, head="logreg"):
        if m is not None:
            backbone, layer = m.backbone, m.layer
        px = m.image_size if m is not None else natives.get(backbone, 224)
        seconds = (n_all - n_sample) * rate(backbone, layer, px) + 3 + 0.002 * n_all  # + the head's fit
        return Plan(name, backbone, layer, head, None if px == natives.get(backbone, 224) else px,
                    logme=m.logme if m else None, estimated_seconds=round(seconds, 1))

    default_px = natives.get(DEFAULT_BACKBONE, 224)
    is_default = lambda m: (m.backbone, m.layer, m.image_size) == (DEFAULT_BACKBONE, None, default_px)  # noqa: E731
    plans = [frozen("defaults", next((m for m in measured if is_default(m)), None))]
    lasts = [m for m in measured if m.layer is None and not is_default(m)]
    if lasts:
        plans.append(frozen("frozen-last", max(lasts, key=lambda m: m.logme)))
    inner = [m for m in measured if m.layer is not None]
    if inner:
        plans.append(frozen("frozen-inner", max(inner, key=lambda m: m.logme), head="rbf-svm"))
    first = measured[0].backbone
    px = small or natives[first]
    for name, stages in STAGES_FOR.items():
        seconds = _TORCH * rate(first, None, px) * stage_cost(stages, n_train, n_val) + 20
        plans.append(Plan(name, first, head="linear", image_size=small, stages=stages,
                          estimated_seconds=round(seconds, 1)))
    if unlabelled is not None:  # pretraining, then graft fit on the run at its own px (no sample cached)
        pixels = (cast(int, SELF_TAUGHT["image_size"]) / natives[first]) ** 2
        per_image = rate(first, None, natives[first]) * pixels
        # + the head's fit as a frozen plan's, + 10 s: the new trunk's ONNX export (nothing cached for it)
        seconds = self_taught_seconds(per_image, unlabelled[1]) + n_all * per_image + 3 + 0.002 * n_all + 10
        plans.append(Plan(SELF_TAUGHT_PLAN, first, estimated_seconds=round(seconds, 1), unlabelled=unlabelled[0],
                          unlabelled_images=unlabelled[1]))
    return plans


def choose_checks(plans: list[Plan], order, budget_seconds: float) -> list[str]:
    """What auto scores on validation: the defaults, then the quadrant's first ``CHECKED`` plans;
    frozen ones always (their features are mostly cached), those that train (fine-tuning,
    self-taught pretraining) only within the budget."""
    by_name = {p.name: p for p in plans}
    checks, total = ["defaults"], by_name["defaults"].estimated_seconds
    for name in order:
        plan = by_name.get(name)
        if plan is None or len(checks) > CHECKED:
            continue
        if not plan.trains or total + plan.estimated_seconds <= budget_seconds:
            checks.append(name)
            total += plan.estimated_seconds
    return checks


