"""The strategy advisor: ``graft advise`` measures a labelled folder and says what to run (a dry
run); ``graft auto`` (:mod:`graft.recipes.auto`) then checks the best candidates on validation.

Three things are measured apart, because each calls for something different:

* size: training images per class (the seeds' small / large): frozen features or fine-tuning
  everything;
* domain: is the target like the source network's ImageNet photos? Measured at the network's
  own input size (224 px for lite0; tiny images upscaled), so small images are judged on what
  they show and not on how few pixels they have. Two signals must both say "similar": the
  last, most ImageNet-specific layer transfers better (higher LogME) than the best inner layer
  (on photos it does, on digits it does not), and LEEP is at least ``SIMILAR_LEEP_GAIN`` of the
  way from chance to certainty (upscaled digits fail this one);
* resolution: the images' short side; for small images the last layer's LogME at the
  network's size (upscaled) against a small, cheap input twice their size.

The seeds' four quadrants (small/large x similar/different) order the candidate plans;
``graft fit``'s defaults are always among those ``graft auto`` checks. With unlabelled images
(``--unlabelled``) and data unlike ImageNet, self-taught pretraining on them comes first, within
the budget (:mod:`graft.recipes.selftaught_plan`); on data like ImageNet it is not proposed. The
measurements are computed from frozen features of a stratified sample through graft's feature
cache, which the full extractions of ``graft auto`` then reuse. LogME: You et al., ICML 2021;
LEEP: Nguyen et al., ICML 2020.
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
from graft.recipes.plans import ORDER, SELF_TAUGHT_PLAN, Measurement, Plan, candidate_plans, choose_checks
from graft.recipes.selftaught_plan import count_unlabelled, self_taught_order, self_taught_reasons
from graft.recipes.settings import AdviseConfig, comma_list

ADVICE_SCHEMA = 2
LARGE_PER_CLASS = 500  # median training images per class from which fine-tuning everything pays
SIMILAR_LEEP_GAIN = 0.2  # LEEP from chance (0) to certain (1); digits measure 0.03-0.15, photos 0.29-0.77
INNER_LAYERS = ("blocks.5", "blocks.4")  # lite0's inner cuts among the default candidates
# lite0 alone: a cold advice on flowers17 with lite2 too took 180 CPU-seconds (BENCHMARKS.md), and
# auto would extract every image again at 260 px; --backbones adds it
DEFAULT_CANDIDATE_BACKBONES = ("tf_efficientnet_lite0",)


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
    native_size: int  # the first backbone's input px: where the domain is measured
    small_size: int | None  # a cheap input for small images (None: they are not small)
    layer_gap: float | None  # at native_size: LogME of the last layer minus the best inner layer
    leep: float
    leep_gain: float  # LEEP from chance (0) to certain (1)
    source_confidence: float
    upscale_gain: float | None  # small images: last-layer LogME at native_size minus at small_size
    size: str  # small | large
    similarity: str  # similar | different
    resolution: str  # low | fine
    quadrant: str
    driver: str  # size | domain | resolution: what moved the recommendation
    sure: float  # share of resampled measurements that give the same similarity call
    strategy: str
    backbone: str
    layer: str | None
    head: str
    image_size: int | None
    command: list[str]
    estimated_seconds: float  # the recommended plan
    checks: list[str] = field(default_factory=list)  # what graft auto checks on validation, in order
    check_seconds: float = 0.0  # their estimated time in all
    plans: list[Plan] = field(default_factory=list)
    measurements: list[Measurement] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)
    budget_minutes: float = 0.0
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)  # plans not proposed or left out, and why
    unlabelled_dir: str | None = None  # --unlabelled: the self-taught plan's images
    unlabelled_images: int | None = None
    pretrain_command: list[str] | None = None  # the recommended plan's first command (self-taught)
    schema: int = ADVICE_SCHEMA

    def to_dict(self) -> dict:
        return asdict(self)

    def plan(self, name: str) -> Plan:
        return next(p for p in self.plans if p.name == name)

    def words(self) -> list[str]:
        """The quadrant's words, each with the numbers behind it."""
        gap = "no inner layer measured" if self.layer_gap is None else \
            f"last layer LogME {self.layer_gap:+.3f} over the best inner layer"
        side = f"{self.median_short_side:.0f} px short side"
        resolution = (f"low ({side}; last-layer LogME at {self.native_size} px, upscaled, {self.upscale_gain:+.3f} "
                      f"over {self.small_size} px; the domain is measured at {self.native_size} px, so low "
                      "resolution is not read as dissimilarity)" if self.resolution == "low" else f"fine ({side})")
        return [f"size: {self.size} ({self.per_class_median:.0f} per class; large from {LARGE_PER_CLASS})",
                f"domain: {self.similarity} to ImageNet (at {self.native_size} px: {gap}; LEEP {self.leep:.3f}, "
                f"{100 * self.leep_gain:.0f} % of the way from chance to certain, similar from "
                f"{100 * SIMILAR_LEEP_GAIN:.0f} %; source model confidence {self.source_confidence:.2f})",
                f"resolution: {resolution}"]

    def text(self) -> str:
        sure = "sure" if self.sure >= 0.9 else "fairly sure" if self.sure >= 0.7 else "unsure"
        lines = [f"{self.data}: {self.n_images} training images, {self.n_classes} classes, "
                 f"{self.per_class_min}-{self.per_class_median:.0f} per class (min-median), "
                 f"balance {self.balance:.1f}x", *self.words(),
                 f"quadrant: {self.quadrant}; what drove the advice: {self.driver}",
                 f"how sure: {sure}: the similarity call held in {100 * self.sure:.0f} % of resampled measurements; "
                 "the plan is a guess until `graft auto` scores it on validation",
                 "LogME of the measured features (higher transfers better):"]
        lines += [f"  {m.logme:8.4f}  {m.backbone}  {m.layer or 'last layer'}  {m.image_size} px  ({m.dim} features)"
                  for m in self.measurements]
        lines += [f"recommended: {self.plan(self.strategy).describe()}", *[f"  because {r}" for r in self.reasons],
                  *[f"note: {n}" for n in self.notes],
                  *([f"run first: {shlex.join(self.pretrain_command)}"] if self.pretrain_command else []),
                  f"run: {shlex.join(self.command)}",
                  f"expected time: about {_duration(self.estimated_seconds)} on this machine "
                  f"(advice took {self.seconds:.1f} s)",
                  "graft auto would score on validation: " + ", ".join(
                      f"{self.plan(n).describe()} ~{_duration(self.plan(n).estimated_seconds)}" for n in self.checks)
                  + f"; about {_duration(self.check_seconds)} in all (budget {self.budget_minutes:g} min)"]
        return "\n".join(lines)


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def _sample(folder: ImageFolder, per_class: int, seed: int) -> ImageFolder:
    rng = np.random.default_rng(seed)
    keep = []
    for label in range(len(folder.classes)):
        members = np.flatnonzero(folder.labels == label)
        keep.extend(sorted(rng.permutation(members)[:per_class]))
    return folder.subset(np.asarray(sorted(keep), dtype=np.int64))


def _short_sides(paths, most: int = 200) -> list[int]:
    from graft.data.decode import read_header

    sides = []
    for path in paths[:most]:
        try:
            header = read_header(path)  # the allow-list of formats, as every decode
            sides.append(min(header.width, header.height))
        except Exception:  # unreadable: reported by the run itself
            continue
    return sides


def recommended_input_size(median_short_side: float, native: int = 224) -> int | None:
    """A cheap input for tiny images: twice their size, in steps of 32, at least 64 (below that
    the network's last feature map vanishes); None when the images are not small."""
    if median_short_side >= native / 2:
        return None
    return int(max(64, min(native, 32 * np.ceil(2 * median_short_side / 32))))


def leep_gain(leep_value: float, n_classes: int) -> float:
    """LEEP rescaled from chance (-log classes -> 0) to certain (0 -> 1)."""
    chance = np.log(max(n_classes, 2))
    return float((leep_value + chance) / chance)


def similarity_call(layer_gap: float | None, gain: float) -> str:
    """``similar`` when the last layer beats the inner ones (or none was measured) and LEEP is
    at least ``SIMILAR_LEEP_GAIN`` of the way from chance to certain, both at the native size."""
    return "similar" if gain >= SIMILAR_LEEP_GAIN and (layer_gap is None or layer_gap > 0) else "different"


def size_call(per_class_median: float) -> str:
    return "large" if per_class_median >= LARGE_PER_CLASS else "small"


def _softmax(vectors: np.ndarray, classifier) -> np.ndarray:
    weight = classifier.weight.detach().numpy().astype(np.float64)
    logits = vectors.astype(np.float64) @ weight.T + classifier.bias.detach().numpy()
    logits -= logits.max(1, keepdims=True)
    return np.exp(logits) / np.exp(logits).sum(1, keepdims=True)


def _measure(backbones, layers, median_side, sample, progress: bool):
    """LogME of every measured (backbone, layer, input px) on ``sample`` with the seconds per
    image of each cold extraction; the features by (backbone, layer, px); the first backbone's
    softmax over its own ImageNet classes (for LEEP); its native px; the small input (or None).
    Candidates after the first (the reference, which must build) whose weights are not
    installed (graft-vision[lite]) are skipped with one warning line; the advice goes on without them."""
    from graft.backbones import create_backbone
    from graft.errors import ModelError
    from graft.features.extractor import FeatureExtractor
    from graft.ranking.scores import logme

    built = {backbones[0]: create_backbone(backbones[0])}
    if not hasattr(built[backbones[0]].model.get_classifier(), "weight"):  # a run folder keeps no ImageNet head
        raise ModelError(f"--backbones {backbones[0]}: the first backbone's ImageNet classifier measures the "
                         "similarity to ImageNet (LEEP), and a graft run folder has none: put an ImageNet backbone "
                         f"first, e.g. --backbones tf_efficientnet_lite0,{backbones[0]}")
    native = built[backbones[0]].preprocessing.size
    small = recommended_input_size(median_side, native)
    pairs = [(backbones[0], layer, size) for size in [None] + ([small] if small else []) for layer in [None, *layers]]
    pairs += [(b, None, None) for b in backbones[1:]]
    measured, found_by, probabilities = [], {}, None
    for backbone, layer, size in pairs:
        try:
            source = built.get(backbone) or built.setdefault(backbone, create_backbone(backbone))
        except ModelError as exc:
            if backbone == backbones[0]:
                raise
            warnings.warn(f"advice skips the optional candidate {backbone}: {exc}")
            continue
        extractor = FeatureExtractor(source, layer=layer, image_size=size, progress=progress).fit()
        extractor.engine_  # noqa: B018 -- the ONNX export (cold cache) is a fixed cost, not a per-image one
        began = time.perf_counter()
        found = extractor.extract_folder(sample, desc=f"advice {backbone} {layer or 'last'} {size or 'native'}")
        cold = len(found) - found.cached
        px = extractor.preprocessing_.size
        rate = (time.perf_counter() - began) / cold if cold else None
        measured.append(Measurement(backbone, layer, px, logme(found.vectors, found.labels),
                                    int(found.vectors.shape[1]), rate))
        found_by[(backbone, layer, px)] = found
        if probabilities is None:  # the first pair: the first backbone's last layer at its own size
            probabilities = _softmax(found.vectors, source.model.get_classifier())
    return measured, found_by, probabilities, native, small


def _sureness(last, inner, probabilities, labels, call: str, seed: int, rounds: int = 20) -> float:
    """Share of random 80 % subsamples of the measured images that give the same similarity call."""
    from graft.ranking.scores import leep, logme

    rng = np.random.default_rng(seed)
    same = 0
    for _ in range(rounds):
        keep = np.sort(rng.permutation(len(labels))[: max(4, int(0.8 * len(labels)))])
        y = labels[keep]
        gap = logme(last[keep], y) - max(logme(f[keep], y) for f in inner) if inner else None
        same += similarity_call(gap, leep_gain(leep(probabilities[keep], y), len(np.unique(y)))) == call
    return same / rounds


def _why(size: str, similarity: str, resolution: str, pick: Plan, native: int) -> tuple[str, list[str]]:
    """What drove the recommendation (size, domain, resolution) and the reasons, in words."""
    drivers, reasons = [], []
    if size == "large":
        drivers.append("size")
        reasons.append("a large target: fine-tuning everything has the images to pay for it")
    if similarity == "different":
        drivers.append("domain")
        reasons.append("a target unlike ImageNet: the last layer is the least reusable; an inner layer's more "
                       "generic features with an RBF SVM, or training the top")
    elif size == "small":
        drivers.append("domain")
        reasons.append("a small target close to ImageNet: its last-layer features already separate it; a short "
                       "fine-tune of the top blocks may add a little")
    if resolution == "low" and pick.unlabelled is None:  # the self-taught plan's reason names its px
        px = pick.image_size or native
        if px != native:
            drivers.append("resolution")
        reasons.append(f"small images: {px} px input ({'cheaper, ' if px != native else ''}"
                       "the higher LogME of the two measured sizes)" if pick.frozen else
                       f"small images: fine-tuning at {px} px")
    return ", ".join(drivers) or "domain", reasons


def advise(config, *, progress: bool = True, out: str = "RUN", **settings) -> Advice:
    """Measure the data and choose what to try; ``config`` is an
    :class:`~graft.recipes.settings.AdviseConfig`, or the folder with its fields as keywords
    (``backbones``/``layers`` as lists or comma-separated). Raises DataError for a class with
    fewer than two images, no readable image, or an ``unlabelled_dir`` that is missing or holds
    too few images (checked before any measurement)."""
    from graft.ranking.scores import leep

    config = advise_config(config, settings)
    start = time.perf_counter()
    train, val = split(config)
    n_unlabelled = count_unlabelled(config.unlabelled_dir) if config.unlabelled_dir else 0
    counts = np.array(list(train.class_counts().values()))
    if counts.min() < 2:
        small = [c for c, n in train.class_counts().items() if n < 2]
        raise DataError(f"class(es) {', '.join(repr(c) for c in small)} in {train.root} have fewer than two "
                        "training images: nothing can be measured or learned from them")
    sample = _sample(train, config.sample_per_class, config.seed)
    sides = _short_sides([str(p) for p in sample.paths])
    if not sides:
        raise DataError(f"no readable image in {train.root}")
    median_side = float(np.median(sides))
    backbones = comma_list(config.backbones) or list(DEFAULT_CANDIDATE_BACKBONES)
    layers = comma_list(config.layers)
    layers = list(INNER_LAYERS if layers is None else layers)
    measured, found, probabilities, native, small = _measure(backbones, layers, median_side, sample, progress)
    first = backbones[0]
    last = found[(first, None, native)]
    inner = [found[(first, layer, native)].vectors for layer in layers]
    logme_of = {(m.backbone, m.layer, m.image_size): m.logme for m in measured}
    gap = (logme_of[(first, None, native)] - max(logme_of[(first, layer, native)] for layer in layers)
           if layers else None)
    leep_value = leep(probabilities, last.labels)
    gain = leep_gain(leep_value, len(train.classes))
    similarity = similarity_call(gap, gain)
    size = size_call(float(np.median(counts)))
    natives = {m.backbone: m.image_size for m in measured if m.layer is None and m.image_size != small}
    natives[first] = native
    sure = _sureness(last.vectors, inner, probabilities, last.labels, similarity, config.seed)
    order = ORDER[(size, similarity)]
    order = self_taught_order(order, similarity, sure) if n_unlabelled else order
    # no --unlabelled: no self-taught plan (the quadrant's order names it, but there is nothing to pretrain on)
    unlabelled = (config.unlabelled_dir, n_unlabelled) if n_unlabelled and SELF_TAUGHT_PLAN in order else None
    plans = candidate_plans(measured, natives, small, len(train), len(val), len(sample), unlabelled)
    checks = choose_checks(plans, order, 60 * config.budget)
    strategy = next((n for n in order if n in checks), "defaults")
    pick = next(p for p in plans if p.name == strategy)
    driver, reasons = _why(size, similarity, "low" if small else "fine", pick, native)
    taught, notes = self_taught_reasons(config.unlabelled_dir, similarity, sure, plans, checks, config.budget)
    reasons += taught
    if pick.logme is not None:
        px = pick.image_size or natives[pick.backbone]
        reasons.append(f"{pick.backbone} at {pick.layer or 'its last layer'}, {px} px has the "
                       f"highest LogME ({pick.logme:.4f}) among the {'inner' if pick.layer else 'last-layer'} "
                       "candidates")
    return Advice(
        data=str(Path(config.data)), n_images=len(train), n_classes=len(train.classes),
        per_class_min=int(counts.min()), per_class_median=float(np.median(counts)),
        balance=float(counts.max() / counts.min()), median_short_side=median_side, native_size=native,
        small_size=small, layer_gap=gap, leep=leep_value, leep_gain=gain,
        source_confidence=float(probabilities.max(1).mean()),
        upscale_gain=logme_of[(first, None, native)] - logme_of[(first, None, small)] if small else None,
        size=size, similarity=similarity, resolution="low" if small else "fine", quadrant=f"{size} + {similarity}",
        driver=driver, sure=sure,
        strategy=strategy, backbone=pick.backbone, layer=pick.layer, head=pick.head, image_size=pick.image_size,
        command=pick.command(config.data, config.val_dir, config.val_fraction, out),
        estimated_seconds=pick.estimated_seconds, checks=checks,
        check_seconds=round(sum(p.estimated_seconds for p in plans if p.name in checks), 1), plans=plans,
        measurements=measured, reasons=reasons, budget_minutes=config.budget,
        seconds=round(time.perf_counter() - start, 2), notes=notes, unlabelled_dir=config.unlabelled_dir,
        unlabelled_images=n_unlabelled or None, pretrain_command=pick.pretrain_command(out))


def advise_config(config, settings: dict) -> AdviseConfig:
    """An AdviseConfig from one, or from the folder and keywords (lists allowed for backbones/layers)."""
    if isinstance(config, AdviseConfig):
        return config
    for key in ("backbones", "layers"):
        if isinstance(settings.get(key), (list, tuple)):
            settings[key] = ",".join(settings[key])
    return AdviseConfig(data=config, **settings)


def split(config: AdviseConfig) -> tuple[ImageFolder, ImageFolder]:
    """The training and validation images ``graft fit`` would use with the same settings."""
    from graft.recipes.settings import DEFAULT_VAL_FRACTION

    with warnings.catch_warnings():  # advice reports balance itself; the runs warn again
        warnings.simplefilter("ignore")
        fraction = None if config.val_dir else (config.val_fraction or DEFAULT_VAL_FRACTION)
        return load_train_val(config.data, val_dir=config.val_dir, val_fraction=fraction, seed=config.seed)
