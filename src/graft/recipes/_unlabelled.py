"""Plumbing of the commands before the labels (cluster, select): frozen features of a folder
(from the cache alone when every image is there: no network is built), a CSV, the image page."""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from graft._io.files import write_atomic
from graft.data.folders import ImageFolder
from graft.features import cache as feature_cache
from graft.features.extractor import Features, gather_features


def folder_features(config, folder: ImageFolder, strict: bool, progress: bool) -> Features:
    """Features of ``folder``'s images with ``config``'s backbone, weights, layer, size and engine
    (the fields it has); read from the feature cache alone, no network built, when ``graft fit`` /
    ``extract`` / an earlier run already saw every image."""
    labelled = bool(folder.classes)
    labels, classes = (folder.labels, folder.classes) if labelled else (None, None)
    options = {name: getattr(config, name) for name in ("weights", "engine") if hasattr(config, name)}
    if config.cache:
        record = feature_cache.lookup_source(feature_cache.source_key(config.backbone, options.get("weights"),
                                                                      config.layer, config.image_size))
        if record is not None:
            found = gather_features(record["extractor_key"], folder.paths, labels, classes, strict)
            if found is not None:
                return found
    from graft.features.extractor import FeatureExtractor

    extractor = FeatureExtractor(config.backbone, layer=config.layer, image_size=config.image_size,
                                 batch_size=config.batch_size, cache=config.cache, progress=progress,
                                 **options).fit()
    return extractor.extract_folder(folder, strict=strict, desc=f"features {folder.root.name}")


def write_csv(path: Path, columns: list[str], rows: list[list]) -> Path:
    """A CSV (the csv module's quoting) written atomically."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    writer.writerows(rows)
    return write_atomic(path, buffer.getvalue())


def write_metrics(run_dir: Path, metrics: dict) -> None:
    write_atomic(run_dir / "metrics.json", json.dumps(metrics, indent=2) + "\n")


def write_page(run_dir: Path, title: str, summary: list[tuple[str, object]], groups: list[dict]) -> Path | None:
    """RUN/report.html with ``groups`` of thumbnails (:func:`graft.reporting.groups.write_groups_page`);
    a failure to draw it warns (the CSV and metrics are already on disk)."""
    import warnings

    from graft.reporting.groups import write_groups_page

    try:
        return write_groups_page(run_dir / "report.html", title, summary, groups)
    except Exception as exc:  # the page is a view of files already written
        warnings.warn(f"could not write {run_dir / 'report.html'}: {type(exc).__name__}: {exc}")
        return None
