"""The advisor's candidate plans: what ``graft auto`` may score on validation, what each costs,
and in which order each of the seeds' quadrants expects them to do best."""
from __future__ import annotations

from dataclasses import dataclass

from graft.recipes.settings import DEFAULT_BACKBONE

STAGES_FOR = {"finetune-top": "head:10,top2:3", "finetune-all": "head:10,all:3"}
# Plans in the order each quadrant expects them to do best (bench_advisor.py, BENCHMARKS.md).
ORDER = {("small", "similar"): ("finetune-top", "frozen-last", "frozen-inner"),
         ("small", "different"): ("frozen-inner", "finetune-top", "frozen-last"),
         ("large", "similar"): ("finetune-all", "frozen-last", "frozen-inner"),
         ("large", "different"): ("finetune-all", "frozen-inner", "frozen-last")}
CHECKED = 2  # plans auto checks on validation besides the defaults
_DEFAULT_SECONDS_PER_IMAGE = 0.02  # lite0, 224 px, cold, 2 cores (BENCHMARKS.md); used when all was cached
# A training image in an epoch that trains backbone layers costs this many frozen passes (forward
# + backward through the top blocks or all); eager torch training runs _TORCH times slower per
# image than the ONNX extraction measured: from BENCHMARKS.md's fine-tuning timings.
_EPOCH_COST = {"top": 2.0, "all": 3.0}
_TORCH = 1.5


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

    @property
    def frozen(self) -> bool:
        return self.stages is None

    def settings(self) -> dict:
        """Keywords for ``fit_frozen`` (frozen plans) or ``finetune``."""
        extra = {"layer": self.layer, "head": self.head} if self.frozen else {"stages": self.stages}
        return {"backbone": self.backbone, "image_size": self.image_size, **extra}

    def command(self, data, val_dir, val_fraction, out) -> list[str]:
        command = ["graft", "fit" if self.frozen else "finetune", str(data)]
        command += ["--val", str(val_dir)] if val_dir else (["--val-split", str(val_fraction)] if val_fraction else [])
        if self.backbone != DEFAULT_BACKBONE:
            command += ["--backbone", self.backbone]
        if self.frozen:
            command += (["--layer", self.layer] if self.layer else []) + \
                       (["--head", self.head] if self.head != "logreg" else [])
        else:
            command += ["--stages", self.stages]
        return command + (["--image-size", str(self.image_size)] if self.image_size else []) + ["-o", str(out)]

    def describe(self) -> str:
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


def candidate_plans(measured: list[Measurement], natives: dict, small: int | None, n_train: int, n_val: int,
                    n_sample: int) -> list[Plan]:
    """Every candidate plan the measurements support, with its estimated seconds."""
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
    return plans


def choose_checks(plans: list[Plan], order, budget_seconds: float) -> list[str]:
    """What auto scores on validation: the defaults, then the quadrant's first ``CHECKED`` plans;
    frozen ones always (their features are mostly cached), fine-tuning only within the budget."""
    by_name = {p.name: p for p in plans}
    checks, total = ["defaults"], by_name["defaults"].estimated_seconds
    for name in order:
        plan = by_name.get(name)
        if plan is None or len(checks) > CHECKED:
            continue
        if plan.frozen or total + plan.estimated_seconds <= budget_seconds:
            checks.append(name)
            total += plan.estimated_seconds
    return checks


