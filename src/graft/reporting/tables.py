"""The text files of a report: predictions.csv, report.txt and split.csv, written and read here.

* ``predictions.csv``: one row per scored image (:data:`PREDICTION_COLUMNS`);
* ``report.txt``: the per-class precision / recall / F1 table of metrics.json's numbers;
* ``split.csv``: every image of a run and whether it trained or validated.

Files are written atomically (a reader never sees half a file).
"""
from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np

from graft._io.files import read_text, write_atomic
from graft.reporting.metrics import classification_metrics

PREDICTION_COLUMNS = ("path", "split", "true_class", "predicted_class", "probability", "true_class_probability",
                      "loss", "correct")


def write_predictions(path: Path, paths, y_true, probabilities, classes, split: str) -> Path:
    """``predictions.csv`` (:func:`predictions_csv`) written to ``path``; returns ``path``."""
    return write_atomic(Path(path), predictions_csv(paths, y_true, probabilities, classes, split))


def predictions_csv(paths, y_true, probabilities, classes, split: str) -> str:
    """``predictions.csv``: one row per image: what it is, what the model said, how sure, and its loss.

    ``paths``: the n image paths; ``y_true``: class indices, shape (n,); ``probabilities``:
    shape (n, classes), rows summing to 1; ``split``: the subset's name (``val``, ``test``,
    ...). Probabilities and the loss (cross-entropy in nats, ``-log p_true``, p floored at
    1e-12) are written with 6 decimals; ``correct`` is 1 or 0.
    """
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(PREDICTION_COLUMNS)
    probabilities = np.asarray(probabilities)
    predicted = probabilities.argmax(1)
    for image, true, guess, row in zip(paths, np.asarray(y_true), predicted, probabilities):
        p_true = float(row[true])
        writer.writerow([str(image), split, classes[true], classes[guess], f"{row[guess]:.6f}", f"{p_true:.6f}",
                         f"{-np.log(max(p_true, 1e-12)):.6f}", int(true == guess)])
    return buffer.getvalue()


def read_predictions(path: Path) -> list[dict]:
    """The rows of a ``predictions.csv``, as ``{column: text}`` (:data:`PREDICTION_COLUMNS`).
    Raises GraftError naming the file and line when a column is missing, a row is cut short or a
    number does not parse (a truncated or edited file)."""
    from graft.errors import GraftError

    try:  # the bytes as written: a "\r" inside a quoted path is part of the path, not a line end
        text = Path(path).read_bytes().decode()
    except (OSError, UnicodeDecodeError):
        text = read_text(path)  # says why, in one line
    rows = list(csv.DictReader(io.StringIO(text, newline="")))
    for number, row in enumerate(rows, 2):
        try:
            if None in row.values() or None in row:  # a short or a long row
                raise ValueError
            float(row["probability"]), float(row["loss"])
        except (KeyError, ValueError):
            raise GraftError(f"{path}: line {number} does not hold the columns {','.join(PREDICTION_COLUMNS)}; the "
                             "file is damaged or cut short, so run the command that wrote it again") from None
    return rows


def report_text(y_true, y_pred, classes: list[str], metrics: dict | None = None) -> str:
    """``report.txt``: the per-class precision / recall / F1 table, from the same numbers as
    metrics.json (``metrics``, computed from ``y_true``/``y_pred`` when not given). A class
    without images in the evaluation set shows dashes and is named under the table."""
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


def write_split(path: Path, train, val) -> Path:
    """``split.csv`` (columns path, class, subset): every image of the run and whether it
    trained or validated, so a ``--val-split`` can be inspected and reproduced.

    ``train``, ``val``: image folders (``.records`` with ``.path`` and ``.label``, and
    ``.classes``); ``val`` may be None. Returns ``path``.
    """
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["path", "class", "subset"])
    for subset, folder in (("train", train), ("val", val)):
        for record in folder.records if folder is not None else []:
            writer.writerow([str(record.path), folder.classes[record.label], subset])
    return write_atomic(Path(path), buffer.getvalue())


def layers_table(infos, transferred: set | None = None) -> list[str]:
    """``graft layers`` as text lines: index, name, type, output shape, parameters, trainable
    (and whether ``--transfer-layers`` copies it), then the total."""
    mark = "  transferred" if transferred else ""
    lines = [f"{'idx':>3}  {'name':22s} {'type':24s} {'output':18s} {'params':>10}  trainable{mark}"]
    for i in infos:
        shape = "x".join(str(d) for d in i.output_shape) or "-"
        copy = ("  copied" if i.name in transferred else "  -") if transferred else ""
        lines.append(f"{i.index:>3}  {i.name:22s} {i.type:24s} {shape:18s} {i.params:>10,}  "
                     f"{'yes' if i.trainable else 'no':9s}{copy}")
    return lines + [f"total parameters: {sum(i.params for i in infos):,}"]
