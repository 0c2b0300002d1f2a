"""The pictures of a report: ``confusion_matrix.png`` and a fine-tuning's ``curves.png``.

Drawn with matplotlib's Agg backend (no display needed); labels and titles as plain text
(``text.parse_math`` off: a class folder named ``cost $5 to $10`` is not maths).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np


def _add_new_system_fonts() -> None:
    """matplotlib's font list is cached: fonts installed since (a CJK font package) are added here."""
    from matplotlib import font_manager

    known = {entry.fname for entry in font_manager.fontManager.ttflist}
    for fname in font_manager.findSystemFonts():
        if fname not in known:
            try:
                font_manager.fontManager.addfont(fname)
            except (OSError, RuntimeError, ValueError):
                continue


def fonts_for(text: str) -> list[str] | None:
    """Font families that together draw every character of ``text``, DejaVu Sans first
    (matplotlib falls back from one family to the next glyph by glyph), or None when some
    character has no installed font. Whitespace needs no glyph."""
    from matplotlib import font_manager
    from matplotlib.ft2font import FT2Font

    default = font_manager.findfont("DejaVu Sans")
    families, covered = ["DejaVu Sans"], set(FT2Font(default).get_charmap())
    missing = {ord(c) for c in text if not c.isspace()} - covered
    if not missing:
        return families
    _add_new_system_fonts()
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


def confusion_matrix_png(y_true, y_pred, classes: list[str], path: Path, title: str = "") -> Path | None:
    """``confusion_matrix.png``: rows the true class, columns the predicted one, counts in the cells.

    ``y_true``, ``y_pred``: class indices, shape (n,), into ``classes``. The picture stays
    readable with many classes: the figure grows with the number of classes (0.45 inch per
    class) and the counts shrink their font; empty cells stay blank. Class names and the title
    are drawn as text, never as maths (``$x$`` in a folder name is shown as it is). Class names
    in scripts the default font lacks (CJK, ...) use an installed font that has them
    (:func:`fonts_for`); where none has them, the axes show class numbers (#0, #1, ... in
    ``classes`` order) and the picture says so. The title ends with the accuracy.

    Returns ``path``, or None when the picture could not be drawn: that only warns (the run's
    other files are the results; the picture is a view of them), and no partial file is left.
    """
    try:
        return _draw_confusion_matrix(y_true, y_pred, classes, Path(path), title)
    except Exception as exc:  # a font, a backend, a full disk: never the run's failure
        import warnings

        Path(path).unlink(missing_ok=True)
        warnings.warn(f"could not draw {path}: {type(exc).__name__}: {exc}")
        return None


def _draw_confusion_matrix(y_true, y_pred, classes: list[str], path: Path, title: str) -> Path:
    # matplotlib's object API on the Agg canvas: no pyplot (its import and figure manager cost
    # ~0.3 s of a cached re-fit), and text only in the non-empty cells
    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    n = len(classes)
    matrix = np.zeros((n, n), dtype=np.int64)
    np.add.at(matrix, (np.asarray(y_true, np.int64), np.asarray(y_pred, np.int64)), 1)
    families = fonts_for("".join(classes) + title)
    labels = classes if families else [f"#{i}" for i in range(n)]
    size = max(4.0, 0.45 * n + 2.5)
    count_size = 7 if n <= 20 else max(4, int(140 / n))
    with matplotlib.rc_context({"font.family": families or ["DejaVu Sans"], "text.parse_math": False,
                                "text.usetex": False}):
        fig = Figure(figsize=(size, size))
        FigureCanvasAgg(fig)
        ax = fig.add_subplot()
        ax.imshow(matrix, cmap="Blues", interpolation="nearest", vmin=0, vmax=max(1, int(matrix.max())))
        threshold = matrix.max() / 2
        for i, j in zip(*np.nonzero(matrix)):  # blank, not "0": the few confusions stand out
            ax.text(j, i, str(matrix[i, j]), ha="center", va="center", fontsize=count_size,
                    color="white" if matrix[i, j] > threshold else "black")
        ax.set_xticks(range(n), labels, rotation=60, ha="right", fontsize=8)
        ax.set_yticks(range(n), labels, fontsize=8)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        accuracy = np.trace(matrix) / max(1, matrix.sum())
        heading = f"{title} accuracy {accuracy:.1%}".strip() if families else f"accuracy {accuracy:.1%}"
        ax.set_title(heading)
        if not families:
            fig.text(0.01, 0.005, "#0, #1, ...: the classes in report.txt's order\n"
                     "(no installed font draws their names)", fontsize=7)
        fig.tight_layout()
        fig.savefig(path, dpi=110)
    return path


def training_curves_png(history: list[dict], path: Path) -> Path | None:
    """``curves.png``: training and validation loss (left) and accuracy (right) per epoch.

    ``history``: one dict per epoch with ``epoch``, ``stage``, ``train_loss``, ``val_loss``,
    ``train_accuracy``, ``val_accuracy`` (history.jsonl's rows). A dashed vertical line marks
    where a new stage of the fine-tuning plan begins. Returns ``path``, or None when the
    picture could not be drawn: as for the confusion matrix, that only warns.
    """
    try:
        return _draw_curves(history, Path(path))
    except Exception as exc:  # the run's results are its other files; the picture is a view
        import warnings

        Path(path).unlink(missing_ok=True)
        warnings.warn(f"could not draw {path}: {type(exc).__name__}: {exc}")
        return None


def _draw_curves(history: list[dict], path: Path) -> Path:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    epochs = [h["epoch"] for h in history]
    fig = Figure(figsize=(10, 4))
    FigureCanvasAgg(fig)
    ax_loss, ax_acc = fig.subplots(1, 2)
    ax_loss.plot(epochs, [h["train_loss"] for h in history], "o-", label="train")
    ax_loss.plot(epochs, [h["val_loss"] for h in history], "o-", label="val")
    ax_acc.plot(epochs, [h["train_accuracy"] for h in history], "o-", label="train")
    ax_acc.plot(epochs, [h["val_accuracy"] for h in history], "o-", label="val")
    for ax, title in ((ax_loss, "loss"), (ax_acc, "accuracy")):
        previous = None
        for h in history:
            if previous is not None and h["stage"] != previous:
                ax.axvline(h["epoch"] - 0.5, color="grey", linestyle="--", linewidth=0.8)
            previous = h["stage"]
        ax.set_xlabel("epoch")
        ax.set_title(title)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return path
