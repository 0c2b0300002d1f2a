"""Training path 1: frozen backbone features + a classical head -> a model in a run folder.

:func:`fit_frozen` is what ``graft fit`` calls; :func:`evaluate` what ``graft evaluate`` calls.

When every image's features are already cached for the requested backbone, layer and size,
the fit runs without building (or even importing) the network: the head is fitted on cached
vectors and the artifact is written from the cached feature-network tensors. That is what makes
"try another head" take seconds.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import cache as feature_cache
from .artifact import artifact_config, write_artifact
from .classical import check_head_options, fit_head
from .data import ImageFolder, load_train_val, scan_folder
from .defaults import DEFAULT_BACKBONE
from .errors import DataError
from .features import Features, gather_features
from .files import atomic_path
from .memory import check_fits
from .runs import RunDir, open_run

DEFAULT_VAL_FRACTION = 0.2


@dataclass
class FitResult:
    run_dir: Path
    metrics: dict

    @property
    def model(self):
        """The saved model, loaded (imports torch)."""
        from .model import GraftModel

        return GraftModel.load(self.run_dir)


@dataclass
class _Extracted:
    """Features of both splits, plus what the artifact needs to know about the network."""

    train: Features
    val: Features
    template: dict  # backbone info, layer, preprocessing (a source record)
    trunk: dict[str, np.ndarray]
    engine: str


def fit_frozen(train_dir, out, *, val_dir=None, val_fraction=None, backbone=DEFAULT_BACKBONE,
               weights=None, layer=None, head="logreg", image_size=None, seed=0, strict=False,
               engine="auto", batch_size=32, cache=True, progress=True, overwrite=False,
               class_weight=None) -> FitResult:
    """Extract frozen features, fit ``head`` on them, save model + reports into ``out``.

    With neither ``val_dir`` nor ``val_fraction``, a stratified 20 % of ``train_dir`` is held
    out (as fastai's ``valid_pct``) so that every run reports held-out metrics. ``out`` may be
    new, empty or an earlier ``fit`` run (replaced); anything else needs ``overwrite``
    (see :func:`graft.runs.open_run`).
    """
    start = time.perf_counter()
    check_head_options(head, class_weight)
    if val_dir is None and val_fraction is None:
        val_fraction = DEFAULT_VAL_FRACTION
    train, val = load_train_val(train_dir, val_dir=val_dir, val_fraction=val_fraction, seed=seed)
    run = open_run(out, "fit", overwrite=overwrite)
    with run.lock("fit"):
        return _fit(run, start, train, val, train_dir, val_dir, val_fraction, backbone, weights, layer, head,
                    image_size, seed, strict, engine, batch_size, cache, progress, class_weight)


def _fit(run, start, train, val, train_dir, val_dir, val_fraction, backbone, weights, layer, head, image_size,
         seed, strict, engine, batch_size, cache, progress, class_weight) -> FitResult:

    key = feature_cache.source_key(backbone, weights, layer, image_size)
    extracted = _from_cache(key, train, val, strict) if cache else None
    if extracted is None:
        extracted = _extract(key, train, val, backbone, weights, layer, image_size, strict, engine,
                             batch_size, cache, progress)
    _require_two_classes(extracted.train, train)

    fitted = fit_head(head, extracted.train.vectors, extracted.train.labels, len(train.classes), seed,
                      class_weight=class_weight)
    training = {"method": "frozen-features", "head": head, "head_params": fitted.params,
                "class_weight": class_weight,
                "cv_accuracy": fitted.cv_accuracy, "seed": seed,
                "train_dir": str(Path(train_dir).resolve())}
    template = extracted.template
    config = artifact_config(template["backbone"], template["layer"], template["preprocessing"],
                             train.classes, fitted.config, training)
    write_artifact(run.model_dir, config, extracted.trunk, fitted.state)

    val_features = extracted.val
    y_pred = fitted.probabilities(val_features.vectors).argmax(1)
    metrics = run.write_evaluation(val_features.labels, y_pred, train.classes, {
        "n_train": len(extracted.train), "n_val": len(val_features),
        "seconds": round(time.perf_counter() - start, 3),
        "head": head, "head_params": fitted.params, "cv_accuracy": fitted.cv_accuracy,
        "features_cached": extracted.train.cached + val_features.cached,
        "engine": extracted.engine,
        "skipped": extracted.train.skipped + val_features.skipped,
    }, title=f"{Path(train_dir).name} ({head})")
    run.write_config({
        "command": "fit", "train_dir": Path(train_dir).resolve(),
        "val_dir": Path(val_dir).resolve() if val_dir else None, "val_fraction": val_fraction,
        "backbone": template["backbone"]["name"], "weights": template["backbone"]["weights_source"],
        "layer": template["layer"], "head": head, "image_size": template["preprocessing"]["size"],
        "seed": seed, "strict": strict, "engine": engine, "batch_size": batch_size, "class_weight": class_weight,
        "classes": train.classes,
    })
    return FitResult(run.path, metrics)


def _from_cache(key, train: ImageFolder, val: ImageFolder, strict) -> _Extracted | None:
    """Both splits from the cache alone, or None if anything is missing."""
    record = feature_cache.lookup_source(key)
    if record is None:
        return None
    extractor_key = record["extractor_key"]
    train_features = gather_features(extractor_key, train.paths, train.labels, train.classes, strict)
    val_features = gather_features(extractor_key, val.paths, val.labels, val.classes, strict)
    if train_features is None or val_features is None:
        return None
    from safetensors.numpy import load_file

    try:
        trunk = load_file(str(feature_cache.trunk_path(extractor_key)))
    except Exception:  # a damaged cached trunk (safetensors raises several types): build the network
        return None
    return _Extracted(train_features, val_features, record, trunk, "cache")


def _extract(key, train, val, backbone, weights, layer, image_size, strict, engine, batch_size,
             cache, progress) -> _Extracted:
    from .backbones import create_backbone
    from .features import FeatureExtractor

    source = create_backbone(backbone, weights=weights)
    extractor = FeatureExtractor(source, layer=layer, image_size=image_size, batch_size=batch_size,
                                 engine=engine, cache=cache, progress=progress).fit()
    check_fits(extractor.feature_net_, extractor.preprocessing_.size, batch_size, training=False)
    train_features = extractor.extract_folder(train, strict=strict, desc="features train")
    val_features = extractor.extract_folder(val, strict=strict, desc="features val")
    trunk = {k: v.detach().cpu().numpy() for k, v in extractor.feature_net_.trunk.state_dict().items()}
    template = {
        "extractor_key": extractor.extractor_key_,
        "backbone": {"name": source.name, "architecture": source.architecture,
                     "weights_source": source.weights_source},
        "layer": extractor.layer_,
        "preprocessing": extractor.preprocessing_.to_dict(),
    }
    if cache:
        _remember_source(key, template, trunk)
    computed = (train_features.cached + val_features.cached) < len(train_features) + len(val_features)
    return _Extracted(train_features, val_features, template, trunk,
                      extractor.engine_ if computed else "cache")


def _remember_source(key: str, template: dict, trunk: dict[str, np.ndarray]) -> None:
    from safetensors.numpy import save_file

    path = feature_cache.trunk_path(template["extractor_key"])
    try:
        if not path.exists():
            with atomic_path(path) as tmp:
                save_file({k: np.ascontiguousarray(v) for k, v in trunk.items()}, str(tmp))
    except OSError as exc:  # a read-only cache: the next fit extracts again
        import warnings

        warnings.warn(f"cannot write {path} ({exc.strerror or exc}); the next fit will not skip the network")
        return
    feature_cache.record_source(key, template)


def _require_two_classes(features: Features, folder: ImageFolder) -> None:
    present = np.unique(features.labels)
    if len(present) < 2:
        raise DataError(f"after skipping unreadable images, {folder.root} has readable images of "
                        f"only {len(present)} class(es); a classifier needs at least two")


def evaluate(run_dir, data_dir, *, strict=False, engine="auto", batch_size=32, cache=True,
             progress=True) -> tuple[Path, dict]:
    """Score a saved model on a labelled folder; reports go to ``RUN_DIR/eval/<folder name>/``."""
    from .model import GraftModel

    start = time.perf_counter()
    model = GraftModel.load(run_dir)
    folder = scan_folder(data_dir, classes=model.classes)
    features, probabilities = model.predict_paths(
        folder.paths, strict=strict, engine=engine, batch_size=batch_size, cache=cache, progress=progress)
    label_of = dict(zip(map(str, folder.paths), folder.labels))
    labels = np.array([label_of[p] for p in features.paths], dtype=np.int64)
    run = RunDir(run_dir if (Path(run_dir) / "model").exists() else Path(run_dir).parent)
    target = Path("eval") / evaluation_folder_name(run.path / "eval", Path(data_dir).resolve())
    metrics = run.write_evaluation(labels, probabilities.argmax(1), model.classes, {
        "n_val": len(features), "data_dir": str(Path(data_dir).resolve()),
        "seconds": round(time.perf_counter() - start, 3), "skipped": features.skipped,
    }, subdir=str(target), title=Path(data_dir).name)
    return run.path / target, metrics


def evaluation_folder_name(eval_root: Path, data_dir: Path) -> str:
    """``eval/<name>`` for a data folder: its own name unless that already holds the evaluation
    of another folder (two folders called ``val``), then the name plus a short hash of the path."""
    import hashlib
    import json

    name = data_dir.name or "data"
    existing = eval_root / name / "metrics.json"
    try:
        taken = json.loads(existing.read_text()).get("data_dir") not in (None, str(data_dir))
    except (OSError, ValueError, AttributeError):
        taken = False
    if not taken:
        return name
    return f"{name}-{hashlib.sha1(str(data_dir).encode()).hexdigest()[:8]}"
