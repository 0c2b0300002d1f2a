"""``graft adapt``: a labelled source folder, an unlabelled target folder, and a network trained
so its features serve both (DANN, Ganin et al. JMLR 2016; CDAN, Long et al. NeurIPS 2018;
``none`` is source-only: the target never enters the network). The shared training path with
:class:`~graft.methods.alignment.DomainAdversarial` as its method.
"""
from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from graft._io.files import read_json, write_atomic
from graft.data.datasets import ImageDataset, readable_images
from graft.data.folders import ImageFolder, scan_folder, scan_unlabelled, warn_unscored_classes
from graft.data.overlap import overlaps, warn_trained_on
from graft.defaults import DEFAULT_BACKBONE
from graft.errors import DataError
from graft.methods.alignment import DomainAdversarial, proxy_a_distance
from graft.recipes._run import FitResult, as_config, score_folder
from graft.recipes._run_plan import NetworkRecipe, RunData, TrainingPlan
from graft.recipes._training import continue_training, start_training
from graft.recipes.settings import AdaptConfig

__all__ = ["AdaptConfig", "adapt", "check_target_domain", "continue_run", "domain_distance", "fitted_to_images"]

# Most images per domain for the proxy A-distance: enough for a stable linear probe, cheap.
DISTANCE_SAMPLE = 1000
# Fewest images per domain to measure it: its probe is scored by 3-fold cross-validation (each fold
# needs images of both domains), and below ~10 a fold's error moves by a third per image.
MIN_DISTANCE_IMAGES = 10
# Below this median shorter side (px), ``backbone="auto"`` trains SMALL_BACKBONE from random weights.
SMALL_IMAGES = 64
SMALL_BACKBONE = "resnet10t"
# The default plans. From random weights DANN needs the task learned before its ramp peaks:
# on MNIST -> MNIST-M, all:24 scored 0.515 against all:12's 0.358 (seed 0, BENCHMARKS.md), and
# source-only fell from 0.205 to 0.151 (it fits MNIST's domain the longer it trains).
SCRATCH_PLAN, PRETRAINED_PLAN = "all:24", "all:12"


def adapt(config, out, *, strict: bool = False, progress: bool = True, overwrite: bool = False,
          **settings) -> FitResult:
    """Unsupervised domain adaptation: train on the labelled source folder and the unlabelled
    target folder, so that the model works on the target's images.

    Parameters
    ----------
    config : AdaptConfig or str
        The settings; or the labelled source folder,
        with the Config's fields as keywords (``settings``).
    out : str or pathlib.Path
        The run folder: new, empty, or an earlier run of this command (replaced).
    strict : bool, default False
        Stop at the first unreadable image (DataError) instead of skipping it with a warning.
    progress : bool, default True
        Show progress bars on stderr.
    overwrite : bool, default False
        Write into a folder that holds something else than an earlier run of this command
        (graft's own outputs are removed first; the user's other files stay).
    **settings
        Fields of :class:`~graft.recipes.settings.AdaptConfig`, when ``config`` is a folder.

    Returns
    -------
    FitResult
        The run folder and the metrics written to ``RUN/metrics.json`` (``.model`` loads the
        saved model).

    Raises
    ------
    GraftError
        A setting no run can use, or an output folder that is or lies inside an input folder;
        raised before the run folder is touched.
    DataError
        An empty or unreadable source or target folder, or a ``target_val_dir`` whose classes
        differ from the source's.

    Notes
    -----
    ``config.target_val_dir`` (labelled, the source's classes) is scored every epoch and at the
    end, never trained on nor used to choose the epoch: the model kept is the last epoch's (its
    reports in ``RUN/target/``). ``RUN/domain.json`` holds the proxy A-distance between the
    source and target features before and after adaptation (0 = indistinguishable, 2 = apart).
    ``config.adversary``: ``dann``, ``cdan``, or ``none`` (source-only: the same run without the
    adversary and the target, for comparison).

    References
    ----------
    Ganin et al., "Domain-Adversarial Training of Neural Networks", JMLR 2016 (DANN).
    Long et al., "Conditional Adversarial Domain Adaptation", NeurIPS 2018 (CDAN).
    Ben-David et al., "Analysis of Representations for Domain Adaptation", NeurIPS 2007
    (proxy A-distance).
    """
    config = as_config(AdaptConfig, config, settings)
    return start_training(config, out, RECIPE, strict=strict, progress=progress, overwrite=overwrite)


@dataclass(frozen=True)
class DomainFolders:
    """adapt's own folders: the unlabelled ``target`` and the labelled ``target_val`` (or None)."""

    target: ImageFolder
    target_val: ImageFolder | None


def _folders(config: AdaptConfig, data: RunData) -> tuple[DomainFolders, dict]:
    """The target (and target-val) folders, scanned once and checked against the source: an
    empty or missing target fails before anything is written."""
    target = scan_unlabelled(config.target_dir, flag="--target")
    source = data.scanned["train"]
    labelled = {"--source": source, **({"--val": data.scanned["val"]} if config.val_dir else {})}
    scored = scan_folder(config.target_val_dir, classes=source.classes) if config.target_val_dir else None
    check_target_domain(target, labelled)
    if scored is not None:  # labelled with the source's classes
        warn_unscored_classes(scored, "target-val")
        warn_trained_on(scored.paths, "target-val", source.paths, "labelled source images")
        if config.adversary != "none":  # source-only never reads the target
            warn_trained_on(scored.paths, "target-val", target.paths, "--target images (adapted to, unlabelled)")
    return DomainFolders(target, scored), {"target": target, **({"target_val": scored} if scored else {})}


def _readable(config: AdaptConfig, data: RunData, strict: bool, progress: bool) -> tuple[DomainFolders, list]:
    target, skipped = readable_images(data.own.target, strict, progress)
    if len(target) == 0:
        raise DataError(f"no readable images in the target folder {config.target_dir}")
    target_val = data.own.target_val
    if target_val is not None:
        target_val, skipped_val = readable_images(target_val, strict, progress)
        skipped = skipped + skipped_val
    return DomainFolders(target, target_val), skipped


def check_target_domain(target: ImageFolder, labelled: dict) -> None:
    """Refuse (DataError, one line) a target that holds only labelled source images
    (``labelled``: {"--source": folder, "--val": folder}; the same folder, or copies): there is
    no second domain to adapt to. Warn when some target images are source images (same
    content), and when the target is too small for the proxy A-distance."""
    same = [what for what, folder in labelled.items() if os.path.samefile(target.root, folder.root)]
    if same:
        raise DataError(f"--target {target.root} is the {same[0]} folder: adaptation needs unlabelled images of "
                        "another domain (the one the model will be used on)")
    shared = overlaps({"--target": target.paths, **{what: folder.paths for what, folder in labelled.items()}})
    pairs = {mine: other for what in labelled for mine, other in shared.get(("--target", what), [])}
    if pairs:
        mine = min(pairs)
        example = f"{len(pairs)} of {len(target)} --target images are labelled source images (same content), " \
                  f"e.g. {mine} = {pairs[mine]}"
        if len(pairs) == len(target):
            raise DataError(f"--target {target.root} holds no image of another domain: {example}; adaptation "
                            "needs unlabelled images of the domain the model will be used on")
        warnings.warn(f"{example}: the two domains overlap, so the adversary learns to tell apart images that "
                      "are the same", stacklevel=2)
    if len(target) < MIN_DISTANCE_IMAGES:
        warnings.warn(f"--target {target.root} has only {len(target)} image(s): too few to adapt to, and the "
                      f"proxy A-distance is not measured (it needs {MIN_DISTANCE_IMAGES} per domain)", stacklevel=2)


def _median_short_side(paths, most: int = 200) -> float:
    """Median shorter side (px) of up to ``most`` of ``paths``, evenly spread; only headers are read."""
    from graft.data.decode import read_header

    sides = []
    for path in paths[::max(1, len(paths) // most)][:most]:
        try:
            header = read_header(path)  # the allow-list of formats, as every decode
            sides.append(min(header.width, header.height))
        except Exception:  # unreadable: the run reports it when it loads the images
            continue
    return float(np.median(sides)) if sides else float("inf")


def fitted_to_images(config: AdaptConfig, source: ImageFolder | None = None) -> AdaptConfig:
    """The Config with ``backbone="auto"`` and ``image_size=None`` chosen from the source
    images' median shorter side. Digit-sized images (under ``SMALL_IMAGES`` px) get
    ``SMALL_BACKBONE`` from random weights at the next multiple of 32 px; ImageNet features
    would need them upscaled to 224 px (minutes per epoch, gigabytes, issue 18). Larger images
    get the pretrained default backbone at twice their side (steps of 32, at least 64 px), or
    its own size from 112 px up, as ``graft advise`` recommends. A backbone that is a run
    folder or a file keeps its own size. ``stages=None`` becomes ``SCRATCH_PLAN`` for a network
    from random weights and ``PRETRAINED_PLAN`` otherwise."""
    if config.backbone != "auto" and (config.image_size is not None or Path(config.backbone).exists()):
        return _with_plan(config)
    if source is None:  # ``source``: the source folder as scanned, when the caller has it
        with warnings.catch_warnings():  # the source's own warnings come once, when training loads it
            warnings.simplefilter("ignore")
            source = scan_folder(config.train_dir)
    side = _median_short_side(source.paths)
    small = side < SMALL_IMAGES
    changes = {}
    if config.backbone == "auto":
        changes = {"backbone": SMALL_BACKBONE if small else DEFAULT_BACKBONE,
                   "pretrained": config.pretrained and not small}
    if config.image_size is None:
        if not changes.get("pretrained", config.pretrained):
            changes["image_size"] = int(min(224, 32 * np.ceil(side / 32)))
        elif side < 112:
            changes["image_size"] = int(max(64, 32 * np.ceil(2 * side / 32)))
    return _with_plan(config.replace(**changes))


def _with_plan(config: AdaptConfig) -> AdaptConfig:
    if config.stages is not None:
        return config
    return config.replace(stages=PRETRAINED_PLAN if config.pretrained else SCRATCH_PLAN)


def continue_run(run, saved: dict, *, given: dict, strict: bool = False, progress: bool = True) -> FitResult:
    """Continue a killed adaptation run (see :func:`graft.recipes.resume.resume`)."""
    return continue_training(run, saved, AdaptConfig, RECIPE, given=given, strict=strict, progress=progress)


def domain_method(parts: TrainingPlan, strict: bool, progress: bool) -> DomainAdversarial:
    """The adversarial method for a run: target loaders, discriminator, ramp."""
    c, target = parts.config, parts.own.target
    generator = torch.Generator().manual_seed(c.seed + 1)
    augment = getattr(parts.train_loader.dataset, "augment", "none")
    target_loader = DataLoader(ImageDataset(target, parts.preprocessing, augment), batch_size=c.batch_size,
                               shuffle=True, generator=generator, drop_last=len(target) > c.batch_size)
    target_val, target_val_loader = parts.own.target_val, None
    if target_val is not None:
        target_val_loader = DataLoader(ImageDataset(target_val, parts.preprocessing, "none"), batch_size=c.batch_size)
    dim = parts.features.output_dim(parts.preprocessing.size)
    return DomainAdversarial(target_loader, dim, len(parts.train.classes), adversary=c.adversary,
                             max_weight=c.adversary_weight, hidden=c.discriminator_width, target_generator=generator,
                             target_val_loader=target_val_loader)


def _pooled(features, folder, preprocessing, batch_size: int, most: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    chosen = folder.subset(np.sort(rng.permutation(len(folder))[:most]))
    loader = DataLoader(ImageDataset(chosen, preprocessing, "none"), batch_size=batch_size)
    was_training = features.training
    features.eval()
    with torch.inference_mode():
        vectors = np.concatenate([features(images).numpy() for images, _ in loader])
    features.train(was_training)
    return vectors


def domain_distance(parts: TrainingPlan) -> float | str:
    """Proxy A-distance between source-training and target features of the network as it is,
    or why it is not measured: its 3-fold cross-validated probe needs ``MIN_DISTANCE_IMAGES``
    images of each domain."""
    c = parts.config
    for what, folder in (("source", parts.train), ("target", parts.own.target)):
        if len(folder) < MIN_DISTANCE_IMAGES:
            return (f"not measured: too few {what} images ({len(folder)}; the 3-fold estimate needs "
                    f"{MIN_DISTANCE_IMAGES} per domain)")
    source = _pooled(parts.features, parts.train, parts.preprocessing, c.batch_size, DISTANCE_SAMPLE, c.seed)
    target = _pooled(parts.features, parts.own.target, parts.preprocessing, c.batch_size, DISTANCE_SAMPLE,
                     c.seed)
    return proxy_a_distance(source, target, c.seed)


def _record_distance(run_path: Path, key: str, value: float | str) -> dict:
    """Add ``key`` to RUN/domain.json (the proxy A-distance before and after adaptation); a
    distance not measured is ``null`` there, with the reason under ``proxy_a_distance_not_measured``."""
    path = run_path / "domain.json"
    data = read_json(path) if path.exists() else {}
    if isinstance(value, str):
        data.update({key: None, "proxy_a_distance_not_measured": value})
    else:
        data[key] = round(value, 4)
    write_atomic(path, json.dumps(data, indent=1) + "\n")
    return data


def _before(run, parts: TrainingPlan) -> None:
    _record_distance(run.path, "proxy_a_distance_before", domain_distance(parts))


def _results(run, parts: TrainingPlan, model) -> dict:
    """After adaptation: the proxy A-distance again, and the labelled target images scored
    (RUN/target/) when --target-val was given."""
    distances = _record_distance(run.path, "proxy_a_distance_after", domain_distance(parts))
    extra = {"adversary": parts.config.adversary, **{k: v for k, v in distances.items() if v is not None}}
    target_val = parts.own.target_val
    if target_val is not None:
        extra["target"] = score_folder(run, model, target_val, subdir="target",
                                       title=f"{target_val.root.name} (target)", batch_size=parts.config.batch_size,
                                       extra={"n_target_val": len(target_val)})
    return extra


# adaptation selects no epoch on source validation: the last one is kept
RECIPE = NetworkRecipe(folders=_folders, configure=lambda config, data: fitted_to_images(config, data.scanned["train"]),
                       readable=_readable, method=domain_method, before=_before, results=_results, keep_last=True)
