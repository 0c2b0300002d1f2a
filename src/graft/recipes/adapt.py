"""Domain adaptation (``graft adapt``): a labelled source folder, an unlabelled target folder,
and a network trained so its features serve both (DANN, CDAN; ``none`` is source-only: the
target never enters the network). Built on the fine-tuning engine with
:class:`~graft.methods.alignment.DomainAdversarial` as its method; the run folder,
artifact, resume and reports are fine-tuning's.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from graft.data.folders import scan_folder, scan_unlabelled
from graft.errors import DataError, GraftError
from graft._io.files import write_atomic
from graft.methods.alignment import DomainAdversarial, proxy_a_distance
from graft.recipes._run import FitResult, as_config
from graft.recipes.settings import AdaptConfig

# Most images per domain for the proxy A-distance: enough for a stable linear probe, cheap.
DISTANCE_SAMPLE = 1000


def adapt(config, out, *, strict: bool = False, progress: bool = True, overwrite: bool = False,
          **settings) -> FitResult:
    """Train on the labelled source folder (``config.train_dir``) and unlabelled
    ``config.target_dir``; ``config.target_val_dir`` (labelled, same classes) is scored every
    epoch and at the end, never trained on nor used to choose the epoch: the model kept is the
    last epoch's. ``config``: an :class:`~graft.recipes.settings.AdaptConfig`, or the source
    folder with its fields as keywords. RUN/domain.json holds the proxy A-distance (Ben-David
    et al. 2007) before and after. Raises DataError for an empty or unreadable target."""
    from graft.recipes.finetune import start_training

    config = as_config(AdaptConfig, config, settings)
    scan_unlabelled(config.target_dir)  # an empty or missing target fails before anything is written
    if config.target_val_dir is not None:
        classes = scan_folder(config.train_dir).classes
        scan_folder(config.target_val_dir, classes=classes)  # must use the source's classes
    return start_training(config, out, strict=strict, progress=progress, overwrite=overwrite)


def continue_run(run, saved, *, given, strict=False, progress=True) -> FitResult:
    """Continue a killed adaptation run (the fine-tuning engine with the adversarial method)."""
    from graft.recipes.finetune import continue_run as continue_training

    return continue_training(run, saved, given=given, strict=strict, progress=progress)


def domain_method(s: dict, parts, strict: bool, progress: bool) -> DomainAdversarial:
    """The adversarial method for a run's settings: target loaders, discriminator, ramp."""
    from graft.data.datasets import ImageDataset, readable_images

    target, skipped = readable_images(scan_unlabelled(s["target_dir"]), strict, progress)
    if len(target) == 0:
        raise DataError(f"no readable images in the target folder {s['target_dir']}")
    parts.skipped += skipped
    parts.target = target
    generator = torch.Generator().manual_seed(s["seed"] + 1)
    augment = parts.train_loader.dataset.augment if hasattr(parts.train_loader.dataset, "augment") else "none"
    target_loader = DataLoader(ImageDataset(target, parts.preprocessing, augment), batch_size=s["batch_size"],
                               shuffle=True, generator=generator, drop_last=len(target) > s["batch_size"])
    target_val_loader = None
    if s.get("target_val_dir"):
        target_val, skipped_val = readable_images(scan_folder(s["target_val_dir"], classes=parts.train.classes), strict,
                                            progress)
        parts.skipped += skipped_val
        parts.target_val = target_val
        target_val_loader = DataLoader(ImageDataset(target_val, parts.preprocessing, "none"),
                                       batch_size=s["batch_size"])
    dim = parts.features.output_dim(parts.preprocessing.size)
    return DomainAdversarial(target_loader, dim, len(parts.train.classes), adversary=s["adversary"],
                             max_weight=s["adversary_weight"], target_generator=generator,
                             target_val_loader=target_val_loader)


def _pooled(features, folder, preprocessing, batch_size: int, most: int, seed: int) -> np.ndarray:
    from graft.data.datasets import ImageDataset

    rng = np.random.default_rng(seed)
    chosen = folder.subset(np.sort(rng.permutation(len(folder))[:most]))
    loader = DataLoader(ImageDataset(chosen, preprocessing, "none"), batch_size=batch_size)
    was_training = features.training
    features.eval()
    with torch.inference_mode():
        vectors = np.concatenate([features(images).numpy() for images, _ in loader])
    features.train(was_training)
    return vectors


def domain_distance(parts, batch_size: int, seed: int) -> float:
    """Proxy A-distance between source-training and target features of the network as it is."""
    source = _pooled(parts.features, parts.train, parts.preprocessing, batch_size, DISTANCE_SAMPLE, seed)
    target = _pooled(parts.features, parts.target, parts.preprocessing, batch_size, DISTANCE_SAMPLE, seed)
    return proxy_a_distance(source, target, seed)


def record_distance(run_path: Path, key: str, value: float) -> dict:
    """Add ``key`` to RUN/domain.json (the proxy A-distance before and after adaptation)."""
    path = run_path / "domain.json"
    data = json.loads(path.read_text()) if path.exists() else {}
    data[key] = round(value, 4)
    write_atomic(path, json.dumps(data, indent=1) + "\n")
    return data
