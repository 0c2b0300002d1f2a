"""``report.html``: one self-contained page per evaluation, to look at rather than read.

Built only from what an evaluation folder already holds (metrics.json, predictions.csv and,
for a training run, config.yaml, model/graft.json, curves.png, lr_find.png, test/, target/,
advice.json), so
``graft report RUN`` can write it again for any run. Everything is inline: thumbnails and
plots as data URIs, CSS and a little JavaScript; the page opens from disk with no network.

What it shows: the summary; the per-class table (click a header to sort); the confusion
matrix (click a cell to see its images; ``report.html#cell=TRUE,PREDICTED`` opens one on
load); the mistakes, highest loss first; training curves and the LR finder where they exist;
the candidates ``graft auto`` scored on validation before it kept the run;
skipped files; the resolved settings.

The page is the jinja2 template ``templates/report.html.j2`` (with ``report.css`` and
``report.js`` beside it), rendered with autoescape on: class names, paths and settings are
text, never markup. This module only gathers the values the template shows.
"""
from __future__ import annotations

import base64
import functools
import io
import json
from pathlib import Path

from graft._io.files import read_json, read_text, read_yaml, write_atomic
from graft.reporting.tables import read_predictions

THUMBNAIL_PX = 96
MAX_THUMBNAILS = 3000  # beyond this the page would pass tens of MB; paths are still listed
TARGET_SAMPLES = 4  # target images per class shown on their own: what the new domain looks like


@functools.lru_cache(maxsize=1)
def _template():
    from jinja2 import Environment, PackageLoader, StrictUndefined

    environment = Environment(loader=PackageLoader("graft.reporting", "templates"), autoescape=True,
                              undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    return environment.get_template("report.html.j2")


def _thumbnail(path: str) -> str | None:
    from graft.data.folders import load_image
    from graft.errors import ImageDecodeError

    try:
        image = load_image(path, min_side=THUMBNAIL_PX)
    except ImageDecodeError:
        return None
    image.thumbnail((THUMBNAIL_PX, THUMBNAIL_PX))
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=75)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode()


def _png(path: Path) -> str | None:
    if not path.is_file():
        return None
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode()


def _percent(value) -> str:
    return f"{100 * value:.1f} %" if isinstance(value, (int, float)) else "-"


def _summary(metrics: dict, model: dict, config: dict) -> list[tuple[str, object]]:
    """The summary table's (heading, value) rows."""
    training = model.get("training", {})
    rows = [("accuracy", _percent(metrics.get("accuracy"))), ("macro F1", f"{metrics.get('macro_f1', 0):.3f}")]
    rows += [(f"top-{k} accuracy", _percent(v)) for k, v in metrics.get("top_k_accuracy", {}).items()]
    rows += [("images scored", metrics.get("n_val", metrics.get("n_test", "-"))),
             ("training images", metrics.get("n_train", "-")),
             ("seconds", metrics.get("seconds", "-")),
             ("backbone", model.get("backbone", {}).get("name", "-")),
             ("layer", model.get("layer") or "final pooled"),
             ("head", training.get("head") or model.get("head", {}).get("kind", "-")),
             ("trained by", training.get("method", config.get("command", "-")))]
    for key in ("head_params", "best_epoch", "stages", "lr"):
        value = metrics.get(key, training.get(key))
        if value not in (None, {}):
            rows.append((key.replace("_", " "), json.dumps(value) if isinstance(value, dict) else value))
    if metrics.get("final_refit"):
        rows.append(("final model", "refitted on training + validation images (scores above: before the refit)"))
    return rows


def _matrix(classes: list[str], predictions: list[dict]) -> list[dict]:
    """One row per true class: its cells' counts and shades (darker blue = more images)."""
    index = {name: i for i, name in enumerate(classes)}
    counts = [[0] * len(classes) for _ in classes]
    for row in predictions:
        counts[index[row["true_class"]]][index[row["predicted_class"]]] += 1
    peak = max((c for line in counts for c in line), default=1) or 1
    lines = []
    for t, name in enumerate(classes):
        cells = []
        for p, n in enumerate(counts[t]):
            shade = int(235 - 180 * n / peak) if n else 255
            cells.append({"true": t, "pred": p, "count": n, "kind": "hit" if t == p else "miss",
                          "shade": shade, "green": shade + 10 if shade < 245 else 255})
        lines.append({"name": name, "cells": cells})
    return lines


def _figure(row: dict, thumbs: dict, index: dict) -> dict:
    """One image of predictions.csv as the template's figure shows it."""
    return {"true_index": index[row["true_class"]], "pred_index": index[row["predicted_class"]],
            "path": row["path"], "loss": row["loss"], "src": thumbs.get(row["path"]),
            "true_class": row["true_class"], "predicted_class": row["predicted_class"],
            "probability": float(row["probability"]), "filename": Path(row["path"]).name}


def _per_class(predictions: list[dict], classes: list[str], most: int) -> list[dict]:
    """The first ``most`` rows of each true class, in predictions.csv's order (the folder's)."""
    chosen, counts = [], dict.fromkeys(classes, 0)
    for row in predictions:
        if counts.get(row["true_class"], most) < most:
            counts[row["true_class"]] += 1
            chosen.append(row)
    return sorted(chosen, key=lambda row: classes.index(row["true_class"]))


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _metrics_problem(metrics: dict) -> str | None:
    """What in a metrics.json the page cannot show, in words, or None."""
    per_class = metrics.get("per_class", {})
    if not isinstance(per_class, dict):
        return f'"per_class" is {json.dumps(per_class)[:40]}, not an object of class -> scores'
    for name, row in per_class.items():
        if not isinstance(row, dict) or not all(_number(row.get(k)) for k in ("precision", "recall", "f1")) \
                or not isinstance(row.get("support"), int):
            return f'"per_class" -> {json.dumps(name)} is not {{"precision", "recall", "f1": number, "support": int}}'
    for key in ("accuracy", "macro_f1"):
        if key in metrics and not _number(metrics[key]):
            return f'"{key}" is {json.dumps(metrics[key])[:40]}, not a number'
    top = metrics.get("top_k_accuracy", {})
    if not isinstance(top, dict) or not all(_number(v) for v in top.values()):
        return '"top_k_accuracy" is not an object of k -> number'
    skipped = metrics.get("skipped", [])
    if not isinstance(skipped, list) or not all(isinstance(i, dict) and {"path", "reason"} <= set(i) for i in skipped):
        return '"skipped" is not a list of {"path", "reason"} objects'
    return None


def checked_metrics(path: Path) -> dict:
    """An evaluation's metrics.json, checked for what report.html shows (per-class scores,
    accuracy, macro F1, top-k accuracy, skipped files). Raises GraftError, one line naming the
    file and what is wrong, for a file edited by hand or damaged (JSON that parses but is not
    what graft wrote)."""
    metrics = read_json(path)
    problem = _metrics_problem(metrics)
    if problem:
        from graft.errors import GraftError

        raise GraftError(f"{path}: {problem}; the file was edited or damaged (graft writes it whole), so restore "
                         "it or run the command that wrote it again")
    return metrics


def _section(directory: Path, name: str, title: str, model: dict, config: dict, samples: int = 0) -> dict:
    """Everything one evaluation folder's section shows; ``samples`` images per class on their
    own (a look at what the images are, e.g. a new domain's)."""
    metrics = checked_metrics(directory / "metrics.json")
    predictions = read_predictions(directory / "predictions.csv") if (directory / "predictions.csv").is_file() else []
    classes = list(metrics.get("per_class", {}))
    index = {c: i for i, c in enumerate(classes)}
    unknown = sorted({row[k] for row in predictions for k in ("true_class", "predicted_class")} - set(index))
    if unknown:
        from graft.errors import GraftError

        raise GraftError(f"{directory / 'predictions.csv'} names class {unknown[0]!r}, which "
                         f"{directory / 'metrics.json'} does not list: the two files come from different runs")
    ordered = sorted(predictions, key=lambda r: -float(r["loss"]))
    thumbs = {row["path"]: _thumbnail(row["path"]) for row in ordered[:MAX_THUMBNAILS]}
    images = [_figure(row, thumbs, index) for row in ordered]
    shown = _per_class(predictions, classes, samples)
    thumbs.update({row["path"]: _thumbnail(row["path"]) for row in shown if row["path"] not in thumbs})
    return {"name": name, "title": title, "summary": _summary(metrics, model, config),
            "per_class": [{"name": c, **row} for c, row in metrics.get("per_class", {}).items()],
            "classes": classes, "matrix": _matrix(classes, predictions),
            "capped": len(ordered) > MAX_THUMBNAILS, "max_thumbnails": MAX_THUMBNAILS, "n_predictions": len(ordered),
            "images": images, "mistakes": [f for f, row in zip(images, ordered) if row["correct"] != "1"],
            "skipped": metrics.get("skipped", []), "samples": [_figure(row, thumbs, index) for row in shown]}


def _auto(root: Path) -> dict | None:
    """What ``graft auto`` checked before it kept this run (RUN/advice.json), or None."""
    path = root / "advice.json"
    if not path.is_file():
        return None
    advice = read_json(path)
    checks = [{**c, "kept": c.get("name") == advice.get("chosen")} for c in advice.get("checked", [])]
    return {"checks": checks, "verdict": advice.get("verdict", ""), "quadrant": advice.get("quadrant", ""),
            "driver": advice.get("driver", ""), "words": advice.get("quadrant_words", [])}


def write_html_report(run_dir, subdir: str | None = None) -> Path:
    """Write ``report.html`` into ``run_dir`` (or ``run_dir/subdir`` for ``graft evaluate``);
    returns its path.

    Needs the folder's metrics.json (GraftError otherwise); predictions.csv, config.yaml,
    model/graft.json, curves.png, lr_find.png, test/ and target/ (with a few images per class) are
    shown when present.
    """
    root = Path(run_dir)
    target = root / subdir if subdir else root
    if not (target / "metrics.json").is_file():
        from graft.errors import GraftError

        evaluations = sorted(p.parent.name for p in (root / "eval").glob("*/metrics.json")) if not subdir else []
        if (root / "model" / "graft.json").is_file() and not subdir:
            # a model scored on nothing yet (a zeroshot run trains on no image): say what scores it
            seen = (f"; its evaluations so far: {', '.join(evaluations)} (`graft report {root} --eval "
                    f"{evaluations[0]}`)") if evaluations else ""
            raise GraftError(f"{target} holds a model but no metrics.json (it was not scored on labelled images): "
                             f"`graft evaluate {root} LABELLED_DIR` scores it and writes its report in "
                             f"{root / 'eval'}/<DATA>/{seen}")
        raise GraftError(f"{target} holds no metrics.json: not a finished graft run or evaluation")
    model_json = root / "model" / "graft.json"
    model = read_json(model_json) if model_json.is_file() else {}
    config_path = root / "config.yaml"
    config_text = read_text(config_path) if config_path.is_file() else ""
    config = read_yaml(config_path) if config_text else {}
    if not subdir and isinstance(config, dict) and config.get("command") == "audit":  # its own page
        from graft.reporting.audit_page import rewrite_audit_page

        return rewrite_audit_page(root)
    command = config.get("command") if isinstance(config, dict) else None
    if not subdir and command in ("cluster", "select"):  # a page of image groups, not a validation page
        from graft.errors import GraftError

        raise GraftError(f"{root}: a graft {command} run's report.html is drawn by graft {command} itself (run it "
                         "again to draw it anew); graft report draws training and evaluation pages")
    name = root.name if not subdir else f"{root.name} / {subdir}"
    try:
        page = _page(root, target, subdir, name, (model, config, config_text))
    except (TypeError, AttributeError, KeyError, ValueError) as exc:  # hand-edited files: one line, no traceback
        from graft.errors import GraftError

        sources = ", ".join(["metrics.json", "predictions.csv", str(model_json), str(config_path)]
                            + ([str(root / "advice.json")] if (root / "advice.json").is_file() and not subdir else []))
        raise GraftError(f"{target}: cannot build report.html from its files ({sources}): {type(exc).__name__}: "
                         f"{exc}; one was edited or damaged, so restore it or run the command that wrote it "
                         "again") from None
    return write_atomic(target / "report.html", page + "\n")


def _page(root: Path, target: Path, subdir: str | None, name: str, about: tuple) -> str:
    model, config, config_text = about
    sections = [_section(target, "validation", f"{name}: {'evaluation' if subdir else 'validation'}", model, config)]
    if not subdir and (root / "test" / "metrics.json").is_file():
        sections.append(_section(root / "test", "test", f"{name}: test (scored once)", model, config))
    if not subdir and (root / "target" / "metrics.json").is_file():  # graft adapt --target-val
        sections.append(_section(root / "target", "target", f"{name}: target domain (never trained on its labels)",
                                 model, config, samples=TARGET_SAMPLES))
    # Several tasks (multi-task runs) will add one section each here, from RUN/<task>/.
    auto = _auto(root) if not subdir else None
    pictures = []
    if not subdir:
        for file, heading in (("curves.png", "Training curves"), ("lr_find.png", "LR range test")):
            src = _png(root / file)
            if src:
                pictures.append((heading, src))
    return _template().render(name=name, sections=sections, auto=auto, pictures=pictures, config_text=config_text)
