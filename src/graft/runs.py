"""The run folder: everything one fit or evaluation leaves behind, in one place.

    RUN_DIR/config.yaml           resolved settings
    RUN_DIR/model/                the model artifact (graft.json + weights.safetensors)
    RUN_DIR/metrics.json          accuracy, macro_f1, per_class, n_train, n_val, seconds, skipped
    RUN_DIR/report.txt            per-class precision/recall/F1 table
    RUN_DIR/confusion_matrix.png
    RUN_DIR/eval/<data>/          the same three files for each ``graft evaluate``
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import numpy as np

from .report import classification_metrics, confusion_matrix_png, report_text


def write_atomic(path: Path, text: str) -> Path:
    """Write then rename, so a crash never leaves half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.replace(tmp, path)
    return path


class RunDir:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)

    @property
    def model_dir(self) -> Path:
        return self.path / "model"

    def write_config(self, settings: dict) -> Path:
        import yaml

        return write_atomic(self.path / "config.yaml", yaml.safe_dump(_plain(settings), sort_keys=False))

    def write_evaluation(self, y_true, y_pred, classes, extra: dict, subdir: str | None = None,
                         title: str = "") -> dict:
        """metrics.json + report.txt + confusion_matrix.png; returns the metrics written."""
        target = self.path / subdir if subdir else self.path
        target.mkdir(parents=True, exist_ok=True)
        y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
        metrics = classification_metrics(y_true, y_pred, classes)
        metrics.update(extra)
        write_atomic(target / "metrics.json", json.dumps(_plain(metrics), indent=2) + "\n")
        write_atomic(target / "report.txt", report_text(y_true, y_pred, classes))
        confusion_matrix_png(y_true, y_pred, classes, target / "confusion_matrix.png", title)
        return metrics


def _plain(obj):
    """numpy scalars/arrays and Paths -> JSON/YAML-safe Python values."""
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    return obj
