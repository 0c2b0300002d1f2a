"""Training path 1: frozen backbone features + a classical head -> a GraftModel run folder.

:func:`fit_frozen` is what ``graft fit`` calls; :func:`evaluate` what ``graft evaluate`` calls.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .backbones import DEFAULT_BACKBONE, create_backbone
from .data import ImageFolder, load_train_val, scan_folder
from .errors import DataError
from .features import FeatureExtractor, Features
from .heads import fit_head
from .model import GraftModel
from .runs import RunDir

DEFAULT_VAL_FRACTION = 0.2


@dataclass
class FitResult:
    run_dir: Path
    model: GraftModel
    metrics: dict


def fit_frozen(train_dir, out, *, val_dir=None, val_fraction=None, backbone=DEFAULT_BACKBONE,
               weights=None, layer=None, head="logreg", image_size=None, seed=0, strict=False,
               engine="auto", batch_size=32, cache=True, progress=True) -> FitResult:
    """Extract frozen features, fit ``head`` on them, save model + reports into ``out``.

    With neither ``val_dir`` nor ``val_fraction``, a stratified 20 % of ``train_dir`` is held
    out (as fastai's ``valid_pct``) so that every run reports held-out metrics.
    """
    start = time.perf_counter()
    if val_dir is None and val_fraction is None:
        val_fraction = DEFAULT_VAL_FRACTION
    train, val = load_train_val(train_dir, val_dir=val_dir, val_fraction=val_fraction, seed=seed)

    source = create_backbone(backbone, weights=weights)
    extractor = FeatureExtractor(source, layer=layer, image_size=image_size, batch_size=batch_size,
                                 engine=engine, cache=cache, progress=progress).fit()
    train_features = extractor.extract_folder(train, strict=strict, desc="features train")
    val_features = extractor.extract_folder(val, strict=strict, desc="features val")
    _require_two_classes(train_features, train)

    fitted = fit_head(head, train_features.vectors, train_features.labels, len(train.classes), seed)
    training = {"method": "frozen-features", "head": head, "head_params": fitted.params,
                "cv_accuracy": fitted.cv_accuracy, "seed": seed,
                "train_dir": str(Path(train_dir).resolve())}
    model = GraftModel.from_backbone(source, fitted.module, train.classes,
                                     preprocessing=extractor.preprocessing_, training=training,
                                     features=extractor.feature_net_)
    run = RunDir(out)
    model.save(run.model_dir)

    y_pred = model.head_probabilities(val_features.vectors).argmax(1)
    skipped = train_features.skipped + val_features.skipped
    metrics = run.write_evaluation(val_features.labels, y_pred, train.classes, {
        "n_train": len(train_features), "n_val": len(val_features),
        "seconds": round(time.perf_counter() - start, 3),
        "head": head, "head_params": fitted.params, "cv_accuracy": fitted.cv_accuracy,
        "features_cached": train_features.cached + val_features.cached,
        "engine": extractor.engine_ if (train_features.cached + val_features.cached) < len(train_features) + len(val_features) else "cache",
        "skipped": skipped,
    }, title=f"{Path(train_dir).name} ({head})")
    run.write_config({
        "command": "fit", "train_dir": Path(train_dir).resolve(),
        "val_dir": Path(val_dir).resolve() if val_dir else None, "val_fraction": val_fraction,
        "backbone": source.name, "weights": source.weights_source, "layer": extractor.layer_,
        "head": head, "image_size": extractor.preprocessing_.size, "seed": seed, "strict": strict,
        "engine": engine, "batch_size": batch_size, "classes": train.classes,
    })
    return FitResult(run.path, model, metrics)


def _require_two_classes(features: Features, folder: ImageFolder) -> None:
    present = np.unique(features.labels)
    if len(present) < 2:
        raise DataError(f"after skipping unreadable images, {folder.root} has readable images of "
                        f"only {len(present)} class(es); a classifier needs at least two")


def evaluate(run_dir, data_dir, *, strict=False, engine="auto", batch_size=32, cache=True,
             progress=True) -> tuple[Path, dict]:
    """Score a saved model on a labelled folder; reports go to ``RUN_DIR/eval/<folder name>/``."""
    start = time.perf_counter()
    model = GraftModel.load(run_dir)
    folder = scan_folder(data_dir, classes=model.classes)
    features, probabilities = model.predict_paths(
        folder.paths, strict=strict, engine=engine, batch_size=batch_size, cache=cache, progress=progress)
    labels = folder.labels[[folder.paths.index(Path(p)) for p in features.paths]] \
        if len(features) != len(folder) else folder.labels
    run = RunDir(run_dir if (Path(run_dir) / "model").exists() else Path(run_dir).parent)
    target = Path("eval") / Path(data_dir).resolve().name
    metrics = run.write_evaluation(labels, probabilities.argmax(1), model.classes, {
        "n_val": len(features), "data_dir": str(Path(data_dir).resolve()),
        "seconds": round(time.perf_counter() - start, 3), "skipped": features.skipped,
    }, subdir=str(target), title=Path(data_dir).name)
    return run.path / target, metrics
