"""A frozen source's features for a fit (``graft fit``): every split's vectors, read from the
feature cache alone when it holds them all (no network built, torch not even imported: trying
another head takes seconds), else extracted, and the source remembered for the next fit."""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from graft._io.files import atomic_path
from graft._io.memory import check_fits
from graft.features import cache as feature_cache
from graft.features.vectors import Features, gather_features


@dataclass
class SourceFeatures:
    """Features of each split (``train``, ``val``, and ``test`` when given), plus what a model
    artifact needs to know about the network: ``template`` (extractor key, backbone info, layer,
    preprocessing), the feature network's ``trunk`` tensors, and the ``engine`` that computed the
    vectors (``"cache"`` when none had to be computed)."""

    splits: dict[str, Features]
    template: dict
    trunk: dict[str, np.ndarray]
    engine: str


def source_features(extractor, folders: dict, *, strict: bool = False) -> SourceFeatures:
    """Every folder's features by ``extractor`` (an unfitted
    :class:`~graft.features.extractor.FeatureExtractor`: its settings say the source): from the
    cache alone when it holds them all, else extracted by the extractor, fitted here."""
    key = feature_cache.source_key(extractor.backbone, extractor.weights, extractor.layer, extractor.image_size)
    found = _from_cache(key, folders, strict) if extractor.cache else None
    return found if found is not None else _extract(key, extractor, folders, strict)


def _from_cache(key, folders: dict, strict) -> SourceFeatures | None:
    """Every split from the cache alone, or None if anything is missing."""
    record = feature_cache.lookup_source(key)
    if record is None:
        return None
    extractor_key = record["extractor_key"]
    splits = {}
    for name, folder in folders.items():
        splits[name] = gather_features(extractor_key, folder.paths, folder.labels, folder.classes, strict)
        if splits[name] is None:
            return None
    from safetensors.numpy import load_file

    try:
        trunk = load_file(str(feature_cache.trunk_path(extractor_key)))
    except Exception:  # a damaged cached trunk (safetensors raises several types): build the network
        return None
    return SourceFeatures(splits, record, trunk, "cache")


def _extract(key, extractor, folders: dict, strict) -> SourceFeatures:
    from graft.backbones import create_backbone

    source = create_backbone(extractor.backbone, weights=extractor.weights)
    extractor = extractor.set_params(backbone=source, weights=None).fit()
    check_fits(extractor.feature_net_, extractor.preprocessing_.size, extractor.batch_size, training=False)
    splits = {name: extractor.extract_folder(folder, strict=strict, desc=f"features {name}")
              for name, folder in folders.items()}
    trunk = {k: v.detach().cpu().numpy() for k, v in extractor.feature_net_.trunk.state_dict().items()}
    template = {
        "extractor_key": extractor.extractor_key_,
        "backbone": {"name": source.name, "architecture": source.architecture,
                     "weights_source": source.weights_source},
        "layer": extractor.layer_,
        "preprocessing": extractor.preprocessing_.to_dict(),
    }
    if extractor.cache:
        _remember_source(key, template, trunk)
    computed = sum(f.cached for f in splits.values()) < sum(len(f) for f in splits.values())
    return SourceFeatures(splits, template, trunk, extractor.engine_ if computed else "cache")


def _remember_source(key: str, template: dict, trunk: dict[str, np.ndarray]) -> None:
    from safetensors.numpy import save_file

    path = feature_cache.trunk_path(template["extractor_key"])
    try:
        if not path.exists():
            with atomic_path(path) as tmp:
                save_file({k: np.ascontiguousarray(v) for k, v in trunk.items()}, str(tmp))
    except OSError as exc:  # a read-only cache: the next fit extracts again
        warnings.warn(f"cannot write {path} ({exc.strerror or exc}); the next fit will not skip the network")
        return
    feature_cache.record_source(key, template)
