"""The strategy advisor: measure a labelled folder's size and its similarity to the source
domain, rank candidate backbones and cut layers by LogME, and say what to run.

The seeds' four-quadrant rule (small/large target x similar/different to the source) decides
the strategy; "similar" is measured with the pretrained network itself instead of guessed.
The deciding measure is whether the network's last, most ImageNet-specific layer transfers
better (higher LogME) than its inner, more generic layers: on photos of objects it does, on
digits it does not. LEEP and the source model's confidence on its own ImageNet classes are
reported beside it; on these datasets neither separates the two kinds (an ImageNet network is
confidently wrong on digits, and unsure on flowers).
Everything is computed from frozen features of a stratified sample, through graft's feature
cache, so a second advice on the same folder takes seconds.
"""
from __future__ import annotations

import shlex
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from graft.data.folders import ImageFolder, load_train_val
from graft.errors import DataError
from graft.recipes.settings import DEFAULT_BACKBONE, AdviseConfig, FinetuneConfig, comma_list

ADVICE_SCHEMA = 1
LARGE_PER_CLASS = 500  # median training images per class from which fine-tuning everything pays
SIMILAR_CONFIDENCE = 0.3  # fallback without inner candidates: mean top-1 ImageNet probability
INNER_LAYERS = ("blocks.5", "blocks.4")  # lite0's inner cuts among the default candidates
DEFAULT_CANDIDATE_BACKBONES = ("tf_efficientnet_lite0", "tf_efficientnet_lite2")
STRATEGIES = ("frozen-last", "frozen-inner", "finetune-top", "finetune-all")


@dataclass
class Candidate:
    backbone: str
    layer: str | None
    logme: float
    dim: int


@dataclass
class Advice:
    """What :func:`advise` measured and recommends; ``to_dict()`` is the ``--json`` output."""

    data: str
    n_images: int
    n_classes: int
    per_class_min: int
    per_class_median: float
    balance: float  # largest class / smallest class
    median_short_side: float
    image_size: int | None  # recommended input size (None: the backbone's own)
    leep: float
    source_confidence: float
    layer_gap: float | None  # LogME of the best last layer minus the best inner layer: > 0 means similar
    size: str  # small | large
    similarity: str  # similar | different
    quadrant: str
    strategy: str
    backbone: str
    layer: str | None
    head: str
    command: list[str]
    estimated_seconds: float
    candidates: list[Candidate] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)
    seconds: float = 0.0
    schema: int = ADVICE_SCHEMA

    def to_dict(self) -> dict:
        return asdict(self)

    def text(self) -> str:
        lines = [
            f"{self.data}: {self.n_images} training images, {self.n_classes} classes, "
            f"{self.per_class_min}-{self.per_class_median:.0f} per class (min-median), balance {self.balance:.1f}x, "
            f"images about {self.median_short_side:.0f} px on the short side",
            f"similarity to ImageNet: last-layer minus inner-layer LogME "
            f"{'-' if self.layer_gap is None else f'{self.layer_gap:+.3f}'}, LEEP {self.leep:.3f}, "
            f"source model confidence {self.source_confidence:.2f} -> {self.similarity}",
            f"quadrant: {self.quadrant}",
            "candidates by LogME (higher transfers better):",
        ]
        for c in self.candidates:
            lines.append(f"  {c.logme:8.4f}  {c.backbone}  layer {c.layer or 'final pooled'}  ({c.dim} features)")
        lines += [f"recommended: {self.strategy} with {self.backbone}, layer {self.layer or 'final pooled'}, "
                  f"head {self.head}" + (f", input {self.image_size} px" if self.image_size else ""),
                  *[f"  because {r}" for r in self.reasons],
                  f"run: {shlex.join(self.command)}",
                  f"expected time: about {_duration(self.estimated_seconds)} on this machine "
                  f"(advice took {self.seconds:.1f} s)"]
        return "\n".join(lines)


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} min"


def _sample(folder: ImageFolder, per_class: int, seed: int) -> ImageFolder:
    rng = np.random.default_rng(seed)
    keep = []
    for label in range(len(folder.classes)):
        members = np.flatnonzero(folder.labels == label)
        keep.extend(sorted(rng.permutation(members)[:per_class]))
    return folder.subset(np.asarray(sorted(keep), dtype=np.int64))


def _short_sides(paths, most: int = 200) -> list[int]:
    from PIL import Image

    sides = []
    for path in paths[:most]:
        try:
            with Image.open(path) as image:
                sides.append(min(image.size))
        except Exception:  # unreadable: reported by the run itself
            continue
    return sides


def recommended_input_size(median_short_side: float, native: int = 224) -> int | None:
    """Tiny images gain nothing from a 224 px input: twice their size, in steps of 32, at least
    64 (below that the network's last feature map vanishes), or None for the native size."""
    if median_short_side >= native / 2:
        return None
    return int(max(64, min(native, 32 * np.ceil(2 * median_short_side / 32))))


def quadrant(per_class_median: float, layer_gap: float | None, source_confidence: float) -> tuple[str, str]:
    size = "large" if per_class_median >= LARGE_PER_CLASS else "small"
    similar = layer_gap > 0 if layer_gap is not None else source_confidence >= SIMILAR_CONFIDENCE
    return size, "similar" if similar else "different"


def choose_strategy(size: str, similarity: str, per_class_median: float) -> tuple[str, list[str]]:
    if size == "small" and similarity == "similar":
        return "frozen-last", ["a small target close to ImageNet: the last layer's features already separate it; "
                               "a linear classifier on them is the best-measured choice"]
    if size == "small":
        # measured (bench_advisor.py): on mnist-2000 and usps-1800 (135-150 per class) an inner layer
        # with an RBF SVM beat both short fine-tuning plans by 5-8 points
        return "frozen-inner", ["a small target unlike ImageNet: an earlier layer's more generic features with an "
                                "RBF SVM, no weights trained"]
    if similarity == "similar":
        return "finetune-all", ["a large target close to ImageNet: fine-tune the whole network from the "
                                "pretrained weights"]
    return "finetune-all", ["a large target unlike ImageNet: fine-tune everything, for longer"]


def _measure(pairs, sample, image_size, progress: bool):
    """LogME of every (backbone, layer) candidate on ``sample``, seconds per image of each cold
    extraction, and the first last-layer candidate's ImageNet probabilities for LEEP."""
    from graft.backbones import create_backbone
    from graft.features.extractor import FeatureExtractor
    from graft.ranking.scores import logme

    candidates, per_image_seconds, source_probabilities, sample_labels = [], {}, None, None
    for backbone, layer in pairs:
        source = create_backbone(backbone)
        extractor = FeatureExtractor(source, layer=layer, image_size=image_size, progress=progress).fit()
        began = time.perf_counter()
        found = extractor.extract_folder(sample, desc=f"advice {backbone} {layer or ''}".strip())
        if found.cached < len(found):
            per_image_seconds[(backbone, layer)] = (time.perf_counter() - began) / (len(found) - found.cached)
        candidates.append(Candidate(backbone, layer, logme(found.vectors, found.labels), int(found.vectors.shape[1])))
        if layer is None and source_probabilities is None:  # the source model's own ImageNet head
            classifier = source.model.get_classifier()
            weight = classifier.weight.detach().numpy().astype(np.float64)
            logits = found.vectors.astype(np.float64) @ weight.T + classifier.bias.detach().numpy()
            logits -= logits.max(1, keepdims=True)
            source_probabilities = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
            sample_labels = found.labels
    return candidates, per_image_seconds, source_probabilities, sample_labels


def advise(config, *, progress: bool = True, out: str = "RUN", **settings) -> Advice:
    """Measure the data and choose a strategy; ``config`` is an
    :class:`~graft.recipes.settings.AdviseConfig`, or the folder with its fields as keywords
    (``backbones``/``layers`` as lists or comma-separated). Raises DataError for a class with
    fewer than two images, or no readable image."""
    from graft.ranking.scores import leep

    if not isinstance(config, AdviseConfig):
        for key in ("backbones", "layers"):
            if isinstance(settings.get(key), (list, tuple)):
                settings[key] = ",".join(settings[key])
        config = AdviseConfig(data=config, **settings)
    data, val_dir, val_fraction, seed = config.data, config.val_dir, config.val_fraction, config.seed
    backbones, layers = comma_list(config.backbones), comma_list(config.layers)
    sample_per_class = config.sample_per_class
    start = time.perf_counter()
    with warnings.catch_warnings():  # advice reports balance itself
        warnings.simplefilter("ignore")
        train, _ = load_train_val(data, val_dir=val_dir,
                                  val_fraction=val_fraction if val_dir is None else None, seed=seed)
    counts = np.array([n for n in train.class_counts().values()])
    if counts.min() < 2:
        small = [c for c, n in train.class_counts().items() if n < 2]
        raise DataError(f"class(es) {', '.join(repr(c) for c in small)} in {train.root} have fewer than two "
                        "training images: nothing can be measured or learned from them")
    sample = _sample(train, sample_per_class, seed)
    sides = _short_sides([str(p) for p in sample.paths])
    if not sides:
        raise DataError(f"no readable image in {train.root}")
    median_side = float(np.median(sides))
    image_size = recommended_input_size(median_side)

    backbones = list(backbones or DEFAULT_CANDIDATE_BACKBONES)
    pairs = [(b, None) for b in backbones]
    pairs += [(backbones[0], layer) for layer in (layers if layers is not None else INNER_LAYERS)]
    candidates, per_image_seconds, source_probabilities, sample_labels = _measure(pairs, sample, image_size, progress)
    if source_probabilities is None:
        raise DataError("the advice needs at least one candidate at the last layer (LEEP)")
    candidates.sort(key=lambda c: -c.logme)
    confidence = float(source_probabilities.max(1).mean())
    last = [c for c in candidates if c.layer is None]
    inner = [c for c in candidates if c.layer is not None]
    gap = last[0].logme - inner[0].logme if inner else None
    size, similarity = quadrant(float(np.median(counts)), gap, confidence)
    strategy, reasons = choose_strategy(size, similarity, float(np.median(counts)))

    pick = (inner or last)[0] if strategy == "frozen-inner" else last[0]
    head = "rbf-svm" if strategy == "frozen-inner" else "logreg"
    reasons.append(f"{pick.backbone} at {pick.layer or 'its last layer'} has the highest LogME "
                   f"({pick.logme:.4f}) among the {'inner' if pick.layer else 'last-layer'} candidates")
    if image_size:
        reasons.append(f"the images are about {median_side:.0f} px: a {image_size} px input loses nothing and "
                       "runs several times faster than 224 px")
    command = _command(strategy, data, val_dir, val_fraction, pick, head, image_size, out)
    rate = per_image_seconds.get((pick.backbone, pick.layer)) or _DEFAULT_SECONDS_PER_IMAGE
    n_all = len(train) + (0 if val_dir is None else len(load_train_val(data, val_dir=val_dir)[1]))
    estimate = n_all * rate * (1 if strategy.startswith("frozen") else _FINETUNE_COST)
    return Advice(
        data=str(Path(data)), n_images=len(train), n_classes=len(train.classes), per_class_min=int(counts.min()),
        per_class_median=float(np.median(counts)), balance=float(counts.max() / counts.min()),
        median_short_side=median_side, image_size=image_size, leep=leep(source_probabilities, sample_labels),
        source_confidence=confidence, layer_gap=gap, size=size, similarity=similarity,
        quadrant=f"{size} + {similarity}",
        strategy=strategy, backbone=pick.backbone, layer=pick.layer, head=head, command=command,
        estimated_seconds=float(estimate), candidates=candidates, reasons=reasons,
        seconds=round(time.perf_counter() - start, 2))


_DEFAULT_SECONDS_PER_IMAGE = 0.02  # lite0, 224 px, cold, 2 cores (BENCHMARKS.md); used when all was cached
# Fine-tuning the default plan costs about this many cold extractions of the data (head epochs are
# nearly free, each augmented top epoch is a forward + backward pass): from BENCHMARKS.md's timings.
_FINETUNE_COST = 8.0
STAGES_FOR = {"finetune-top": FinetuneConfig.stages, "finetune-all": "head:10,all:8"}


def _command(strategy, data, val_dir, val_fraction, pick: Candidate, head, image_size, out) -> list[str]:
    command = ["graft", "fit" if strategy.startswith("frozen") else "finetune", str(data)]
    if val_dir:
        command += ["--val", str(val_dir)]
    elif val_fraction:
        command += ["--val-split", str(val_fraction)]
    if pick.backbone != DEFAULT_BACKBONE:
        command += ["--backbone", pick.backbone]
    if strategy.startswith("frozen"):
        if pick.layer:
            command += ["--layer", pick.layer]
        if head != "logreg":
            command += ["--head", head]
    else:
        command += ["--stages", STAGES_FOR[strategy]]
    if image_size:
        command += ["--image-size", str(image_size)]
    return command + ["-o", str(out)]


def run_advice(advice: Advice, out, *, val_dir=None, val_fraction=None, progress: bool = True, overwrite=False):
    """``graft auto``: run what ``advice`` recommends into ``out`` and keep the advice there."""
    import json

    from graft._io.files import write_atomic

    if advice.strategy.startswith("frozen"):
        from graft.recipes.frozen import fit_frozen

        result = fit_frozen(advice.data, out, val_dir=val_dir, val_fraction=val_fraction, backbone=advice.backbone,
                            layer=advice.layer, head=advice.head, image_size=advice.image_size, progress=progress,
                            overwrite=overwrite)
    else:
        from graft.recipes.finetune import finetune

        result = finetune(advice.data, out, val_dir=val_dir, val_fraction=val_fraction, backbone=advice.backbone,
                          stages=STAGES_FOR[advice.strategy], image_size=advice.image_size, progress=progress,
                          overwrite=overwrite)
    write_atomic(Path(out) / "advice.json", json.dumps(advice.to_dict(), indent=2) + "\n")
    return result
