"""Classification reports: metrics.json content, a text table, a confusion-matrix picture."""
from __future__ import annotations

from pathlib import Path

import numpy as np


def classification_metrics(y_true, y_pred, classes: list[str]) -> dict:
    """accuracy, macro F1 and per-class precision/recall/F1/support, keyed by class name.

    The macro averages are over the classes present in ``y_true``: a class with no images in
    the evaluation set has no recall to measure. ``report_text`` prints these same numbers.
    """
    from sklearn.metrics import accuracy_score, precision_recall_fscore_support

    labels = list(range(len(classes)))
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=labels, zero_division=0)
    present = support > 0  # a class absent from the evaluation set does not count in the mean
    return {
        "accuracy": float(accuracy_score(y_true, y_pred)) if len(y_true) else 0.0,
        "macro_precision": float(precision[present].mean()) if present.any() else 0.0,
        "macro_recall": float(recall[present].mean()) if present.any() else 0.0,
        "macro_f1": float(f1[present].mean()) if present.any() else 0.0,
        "per_class": {
            name: {"precision": float(precision[i]), "recall": float(recall[i]),
                   "f1": float(f1[i]), "support": int(support[i])}
            for i, name in enumerate(classes)
        },
    }


def report_text(y_true, y_pred, classes: list[str], metrics: dict | None = None) -> str:
    """The per-class precision / recall / F1 table, from the same numbers as metrics.json."""
    metrics = metrics or classification_metrics(y_true, y_pred, classes)
    width = max([len(c) for c in classes] + [len("macro avg")])
    lines = [f"{'':{width}}  precision    recall  f1-score   support", ""]
    absent = []
    for name, row in metrics["per_class"].items():
        if row["support"] == 0:
            absent.append(name)
            lines.append(f"{name:>{width}}  {'-':>9} {'-':>9} {'-':>9} {0:>9}   (no images here)")
            continue
        lines.append(f"{name:>{width}}  {row['precision']:9.3f} {row['recall']:9.3f} {row['f1']:9.3f} "
                     f"{row['support']:>9}")
    total = sum(row["support"] for row in metrics["per_class"].values())
    lines += ["", f"{'accuracy':>{width}}  {'':9} {'':9} {metrics['accuracy']:9.3f} {total:>9}",
              f"{'macro avg':>{width}}  {metrics['macro_precision']:9.3f} {metrics['macro_recall']:9.3f} "
              f"{metrics['macro_f1']:9.3f} {total:>9}"]
    if absent:
        lines.append(f"(macro averages over the {len(classes) - len(absent)} classes with images; "
                     f"without any: {', '.join(absent)})")
    return "\n".join(lines) + "\n"


def _fonts_for(text: str) -> list[str] | None:
    """Font families that together draw every character of ``text`` (matplotlib falls back
    from one to the next glyph by glyph), or None when some character has no installed font."""
    from matplotlib import font_manager
    from matplotlib.ft2font import FT2Font

    default = font_manager.findfont("DejaVu Sans")
    families, covered = ["DejaVu Sans"], set(FT2Font(default).get_charmap())
    missing = {ord(c) for c in text if not c.isspace()} - covered
    if not missing:
        return families
    known = {entry.fname for entry in font_manager.fontManager.ttflist}
    # matplotlib's font list is cached: fonts installed since (a CJK font package) are added here
    for fname in font_manager.findSystemFonts():
        if fname not in known:
            try:
                font_manager.fontManager.addfont(fname)
            except (OSError, RuntimeError, ValueError):
                continue
    for entry in font_manager.fontManager.ttflist:
        if "Last Resort" in entry.name:  # claims every character, draws each as a box
            continue
        try:
            charmap = set(FT2Font(entry.fname).get_charmap())
        except (OSError, RuntimeError):
            continue
        if missing & charmap and entry.name not in families:
            families.append(entry.name)
            missing -= charmap
            if not missing:
                return families
    return None


def confusion_matrix_png(y_true, y_pred, classes: list[str], path: Path, title: str = "") -> Path:
    """The confusion matrix as a picture that stays readable with many classes: the figure grows
    with the number of classes, and the counts shrink their font. Class names in scripts the
    default font lacks (CJK, ...) use an installed font that has them; where none has them, the
    axes show class numbers and the picture says where the names are."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import confusion_matrix

    matrix = confusion_matrix(y_true, y_pred, labels=list(range(len(classes))))
    n = len(classes)
    families = _fonts_for("".join(classes) + title)
    labels = classes if families else [f"#{i}" for i in range(n)]
    size = max(4.0, 0.45 * n + 2.5)
    count_size = 7 if n <= 20 else max(4, int(140 / n))
    with matplotlib.rc_context({"font.family": families or ["DejaVu Sans"]}):
        fig, ax = plt.subplots(figsize=(size, size))
        ax.imshow(matrix, cmap="Blues")
        ax.set_xticks(range(n), labels, rotation=60, ha="right", fontsize=8)
        ax.set_yticks(range(n), labels, fontsize=8)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        threshold = matrix.max() / 2 if matrix.size else 0
        for i in range(n):
            for j in range(n):
                if matrix[i, j]:
                    ax.text(j, i, str(matrix[i, j]), ha="center", va="center", fontsize=count_size,
                            color="white" if matrix[i, j] > threshold else "black")
        accuracy = np.trace(matrix) / max(1, matrix.sum())
        heading = f"{title} accuracy {accuracy:.1%}".strip() if families else f"accuracy {accuracy:.1%}"
        ax.set_title(heading)
        if not families:
            fig.text(0.01, 0.005, "#0, #1, ...: the classes in report.txt's order\n(no installed font draws their names)",
                     fontsize=7)
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)
    return path
