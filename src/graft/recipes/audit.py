"""``graft audit``: what is wrong with a labelled image folder, before training on it.

Frozen features of every image (through graft's feature cache: a second audit, or an audit
after ``graft fit`` on the same images, neither builds nor imports the network) feed the
checks of :mod:`graft.curation`: likely wrong labels, exact and near copies (a copy shared by
DATA and ``--val`` / ``--test`` is a ``leak``), outliers, tiny or extreme images, small
classes. RUN/audit.csv lists one row per finding, RUN/report.html shows them with their
images, RUN/metrics.json counts them. No image is moved, changed or deleted.
"""
from __future__ import annotations

import csv
import time

import numpy as np

from graft._io.files import atomic_path, write_atomic
from graft.artifacts.run_folder import open_run
from graft.curation.copies import find_copies
from graft.curation.labels import find_label_issues
from graft.curation.outliers import far_out, image_shape_issues, outlier_scores, small_classes
from graft.data.folders import ImageFolder, scan_folder
from graft.errors import DataError
from graft.features.extractor import Features
from graft.recipes._run import FitResult, as_config, check_not_an_input
from graft.recipes._unlabelled import folder_features
from graft.recipes.settings import AuditConfig

__all__ = ["AUDIT_COLUMNS", "ISSUES", "AuditConfig", "audit", "read_audit"]

AUDIT_COLUMNS = ("path", "issue", "split", "given", "suggested", "score", "other_path", "other_split", "other_given",
                 "detail")
# in the order audit.csv lists them
ISSUES = ("label", "leak", "duplicate", "near-duplicate", "outlier", "tiny", "extreme-aspect", "imbalance",
          "unreadable")


def audit(config, out, *, strict: bool = False, progress: bool = True, overwrite: bool = False,
          **settings) -> FitResult:
    """Audit ``config.train_dir`` (and ``val_dir`` / ``test_dir``) into the run folder ``out``.

    ``config``: an :class:`~graft.recipes.settings.AuditConfig`, or the folder with its fields
    as keywords. Returns the run folder and the counts written to ``metrics.json``
    (``{"issues": {issue: rows}, "n_images", "seconds", ...}``). Raises DataError / GraftError
    (one line) for a missing or unreadable folder before anything is written."""
    start = time.perf_counter()
    config = as_config(AuditConfig, config, settings)
    folders = {"train": scan_folder(config.train_dir)}
    for split, root in (("val", config.val_dir), ("test", config.test_dir)):
        if root is not None:
            folders[split] = scan_folder(root, classes=folders["train"].classes)
    _check_distinct(folders)
    check_not_an_input(out, config)
    run = open_run(out, "audit", overwrite=overwrite)
    with run.lock("audit"):
        features = {split: folder_features(config, folder, strict, progress) for split, folder in folders.items()}
        rows, metrics = _findings(config, folders, features)
        metrics["seconds"] = round(time.perf_counter() - start, 3)
        _write(run, rows, metrics, config)
    found = ", ".join(f"{issue} {n}" for issue, n in metrics["issues"].items() if n) or "nothing"
    summary = (f"audited {metrics['n_images']} images in {metrics['seconds']:.1f} s: {found}\n"
               f"wrote {run.path}/: audit.csv report.html metrics.json config.yaml (no image was moved or changed)")
    return FitResult(run.path, {**metrics, "summary": summary})


def _check_distinct(folders: dict[str, ImageFolder]) -> None:
    """DataError when --val or --test names DATA or each other: every image would be reported
    as a leak of itself (graft fit refuses such a validation folder too)."""
    import os

    names = {"train": "DATA", "val": "--val", "test": "--test"}
    splits = list(folders)
    for index, split in enumerate(splits):
        for earlier in splits[:index]:
            if os.path.samefile(folders[split].root, folders[earlier].root):
                raise DataError(f"{names[split]} {folders[split].root} is the {names[earlier]} folder: each of its "
                                "images would be reported as a copy of itself; give a different folder")


def _row(path, issue: str, split: str, given: str = "", **fields) -> dict:
    """One audit.csv row; ``fields``: the other AUDIT_COLUMNS (empty when not given)."""
    row = dict.fromkeys(AUDIT_COLUMNS, "")
    row.update(path=str(path), issue=issue, split=split, given=given, **fields)
    row["other_path"] = str(row["other_path"])
    if row["score"] != "":
        row["score"] = round(float(row["score"]), 4)
    return row


def _findings(config: AuditConfig, folders: dict[str, ImageFolder], features: dict[str, Features]):
    classes = folders["train"].classes
    splits = [split for split, f in features.items() for _ in f.paths]
    paths = [p for f in features.values() for p in f.paths]
    labels = np.concatenate([f.labels for f in features.values()])
    vectors = np.concatenate([f.vectors for f in features.values()])
    rows = []
    present = np.bincount(labels, minlength=len(classes))
    if (present >= 2).sum() >= 2:
        found = find_label_issues(vectors, labels, len(classes), threshold=config.label_threshold,
                                  method=config.label_method, folds=config.folds, seed=config.seed)
        rows += [_row(paths[i], "label", splits[i], classes[labels[i]], suggested=classes[found.suggested[i]],
                      score=found.score[i])
                 for i in np.flatnonzero(found.flagged)]
    for copy in find_copies(paths, vectors, feature_threshold=config.copy_similarity,
                            pixel_threshold=config.pixel_agreement):
        i, j = copy.first, copy.second
        issue = "leak" if splits[i] != splits[j] else "duplicate" if copy.kind == "exact" else "near-duplicate"
        rows.append(_row(paths[j], issue, splits[j], classes[labels[j]], score=copy.score, other_path=paths[i],
                         other_split=splits[i], other_given=classes[labels[i]],
                         detail=copy.kind + ("" if labels[i] == labels[j] else ", another class")))
    scores = outlier_scores(vectors)
    rows += [_row(paths[i], "outlier", splits[i], classes[labels[i]], score=scores[i],
                  detail="cosine distance to its 10th nearest image") for i in np.flatnonzero(far_out(scores))]
    position = {p: i for i, p in enumerate(paths)}
    for split, folder in folders.items():
        for index, issue, value in image_shape_issues(folder.paths, min_side=config.min_side,
                                                      max_aspect=config.max_aspect):
            path = str(folder.paths[index])
            label = labels[position[path]] if path in position else folder.labels[index]
            rows.append(_row(path, issue, split, classes[label], score=value))
        for item in features[split].skipped:
            rows.append(_row(item["path"], "unreadable", split, detail=item["reason"]))
    counts = folders["train"].class_counts()
    rows += [_row(folders["train"].root / name, "imbalance", "train", name, score=ratio,
                  detail=f"{counts[name]} image(s); the median class has {np.median(list(counts.values())):g}")
             for name, ratio in small_classes(counts).items()]
    # the likeliest first: the lowest label scores, the farthest outliers
    rows.sort(key=lambda r: (ISSUES.index(r["issue"]), {"label": 1, "outlier": -1}.get(r["issue"], 0)
                             * (r["score"] or 0), r["path"]))
    metrics = {"issues": {issue: sum(r["issue"] == issue for r in rows) for issue in ISSUES},
               "n_images": len(paths), "n_flagged_images": len({r["path"] for r in rows}),
               "classes": classes, "splits": {s: len(f) for s, f in features.items()},
               "skipped": sorted((item for f in features.values() for item in f.skipped), key=lambda i: i["path"])}
    return rows, metrics


def _write(run, rows: list[dict], metrics: dict, config: AuditConfig) -> None:
    import json

    run_dir = run.path
    # a file name that is not UTF-8 is written as its own bytes (surrogateescape), as split.csv is
    with atomic_path(run_dir / "audit.csv") as tmp, open(tmp, "w", newline="", encoding="utf-8",
                                                          errors="surrogateescape") as handle:
        writer = csv.DictWriter(handle, fieldnames=AUDIT_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    write_atomic(run_dir / "metrics.json", json.dumps(metrics, indent=2) + "\n")
    run.write_config({"command": "audit", **config.to_dict()})
    from graft.reporting.audit_page import write_audit_page

    write_audit_page(run_dir, rows, metrics)


def read_audit(path) -> list[dict]:
    """The rows of an audit.csv (``AUDIT_COLUMNS``); DataError naming the file if it is not one."""
    try:
        with open(path, newline="", encoding="utf-8", errors="surrogateescape") as handle:  # as _write wrote it
            reader = csv.DictReader(handle)
            if not reader.fieldnames or "path" not in reader.fieldnames:
                raise DataError(f"{path}: not an audit.csv (no 'path' column)")
            return list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}") from None
