"""``report.html``: one self-contained page per evaluation, to look at rather than read.

Built only from what an evaluation folder already holds (metrics.json, predictions.csv and,
for a training run, config.yaml, model/graft.json, curves.png, lr_find.png, test/), so
``graft report RUN`` can write it again for any run. Everything is inline: thumbnails and
plots as data URIs, CSS and a little JavaScript; the page opens from disk with no network.

What it shows: the summary; the per-class table (click a header to sort); the confusion
matrix (click a cell to see its images; ``report.html#cell=TRUE,PREDICTED`` opens one on
load); the mistakes, highest loss first; training curves and the LR finder where they exist;
skipped files; the resolved settings.
"""
from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path

from graft._io.files import write_atomic
from graft.artifacts.run_folder import read_predictions

THUMBNAIL_PX = 96
MAX_THUMBNAILS = 3000  # beyond this the page would pass tens of MB; paths are still listed


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


def _e(value) -> str:
    return html.escape(str(value), quote=True)


def _percent(value) -> str:
    return f"{100 * value:.1f} %" if isinstance(value, (int, float)) else "-"


def _summary(metrics: dict, model: dict, config: dict, title: str) -> str:
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
    body = "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in rows)
    return f"<h1>{_e(title)}</h1><table class='summary'>{body}</table>"


def _per_class(metrics: dict) -> str:
    head = "".join(f"<th data-sort='{i}'>{name}</th>"
                   for i, name in enumerate(("class", "precision", "recall", "F1", "support")))
    rows = []
    for name, row in metrics.get("per_class", {}).items():
        cells = [f"<td>{_e(name)}</td>"] + [f"<td data-value='{row[k]}'>{row[k]:.3f}</td>"
                                             for k in ("precision", "recall", "f1")]
        cells.append(f"<td data-value='{row['support']}'>{row['support']}</td>")
        rows.append(f"<tr>{''.join(cells)}</tr>")
    return (f"<h2>Per class</h2><p class='hint'>Click a column header to sort.</p>"
            f"<table class='grid sortable per-class'><thead><tr>{head}</tr></thead>"
            f"<tbody>{''.join(rows)}</tbody></table>")


def _matrix(classes: list[str], predictions: list[dict], name: str) -> str:
    index = {name: i for i, name in enumerate(classes)}
    counts = [[0] * len(classes) for _ in classes]
    for row in predictions:
        counts[index[row["true_class"]]][index[row["predicted_class"]]] += 1
    peak = max((c for line in counts for c in line), default=1) or 1
    header = "".join(f"<th class='col' title='{_e(c)}'><span>{_e(c)}</span></th>" for c in classes)
    lines = []
    for t, class_name in enumerate(classes):
        cells = []
        for p in range(len(classes)):
            n = counts[t][p]
            shade = int(235 - 180 * n / peak) if n else 255
            kind = "hit" if t == p else "miss"
            cells.append(f"<td class='cell {kind}' id='{name}-cell-{t}-{p}' data-true='{t}' data-pred='{p}' "
                         f"data-count='{n}' style='background:rgb({shade},{shade + 10 if shade < 245 else 255},255)'>"
                         f"{n or ''}</td>")
        lines.append(f"<tr><th class='row'>{_e(class_name)}</th>{''.join(cells)}</tr>")
    return ("<h2>Confusion matrix</h2><p class='hint'>Rows: true class; columns: predicted. Click a cell to see "
            "its images.</p><div class='scroll'><table class='grid matrix'>"
            f"<thead><tr><th></th>{header}</tr></thead><tbody>{''.join(lines)}</tbody></table></div>"
            "<div class='cell-view'><p class='hint'>No cell selected.</p></div>")


def _figure(row: dict, thumbs: dict, index: dict) -> str:
    src = thumbs.get(row["path"])
    picture = f"<img src='{src}' alt=''>" if src else "<div class='missing'>no image</div>"
    return (f"<figure data-true='{index[row['true_class']]}' data-pred='{index[row['predicted_class']]}' "
            f"data-path='{_e(row['path'])}' data-loss='{row['loss']}'>{picture}<figcaption>"
            f"<b>{_e(row['true_class'])}</b> &rarr; {_e(row['predicted_class'])} {float(row['probability']):.2f}"
            f"<br><span class='path'>{_e(Path(row['path']).name)}</span></figcaption></figure>")


def _section(directory: Path, name: str, title: str, model: dict, config: dict) -> str:
    metrics = json.loads((directory / "metrics.json").read_text())
    predictions = read_predictions(directory / "predictions.csv") if (directory / "predictions.csv").is_file() else []
    classes = list(metrics.get("per_class", {}))
    index = {c: i for i, c in enumerate(classes)}
    ordered = sorted(predictions, key=lambda r: -float(r["loss"]))
    thumbs = {row["path"]: _thumbnail(row["path"]) for row in ordered[:MAX_THUMBNAILS]}
    capped = (f"<p class='hint'>Thumbnails for the {MAX_THUMBNAILS} highest-loss images of {len(ordered)}.</p>"
              if len(ordered) > MAX_THUMBNAILS else "")
    mistakes = [row for row in ordered if row["correct"] != "1"]
    gallery = "".join(_figure(row, thumbs, index) for row in mistakes)
    store = "".join(_figure(row, thumbs, index) for row in ordered)
    skipped = metrics.get("skipped", [])
    skipped_html = ("<ul>" + "".join(f"<li><code>{_e(s['path'])}</code>: {_e(s['reason'])}</li>" for s in skipped)
                    + "</ul>") if skipped else "<p>None.</p>"
    return (f"<section id='{name}' class='evaluation'>{_summary(metrics, model, config, title)}{_per_class(metrics)}"
            f"{_matrix(classes, predictions, name)}{capped}"
            f"<h2>Mistakes ({len(mistakes)})</h2><p class='hint'>Highest loss first: true class &rarr; predicted, "
            f"and the probability the model gave its prediction.</p><div class='gallery mistakes'>{gallery}</div>"
            f"<template class='all-images'>{store}</template>"
            f"<h2>Skipped files ({len(skipped)})</h2>{skipped_html}</section>")


def write_html_report(run_dir, subdir: str | None = None) -> Path:
    """Write ``report.html`` into ``run_dir`` (or ``run_dir/subdir`` for ``graft evaluate``)."""
    import yaml

    root = Path(run_dir)
    target = root / subdir if subdir else root
    model_json = root / "model" / "graft.json"
    model = json.loads(model_json.read_text()) if model_json.is_file() else {}
    config_path = root / "config.yaml"
    config_text = config_path.read_text() if config_path.is_file() else ""
    config = (yaml.safe_load(config_text) or {}) if config_text else {}
    name = root.name if not subdir else f"{root.name} / {subdir}"
    sections = [_section(target, "validation", f"{name}: {'evaluation' if subdir else 'validation'}", model, config)]
    if not subdir and (root / "test" / "metrics.json").is_file():
        sections.append(_section(root / "test", "test", f"{name}: test (scored once)", model, config))
    # Several tasks (multi-task runs) will add one section each here, from RUN/<task>/.
    pictures = ""
    if not subdir:
        for file, heading in (("curves.png", "Training curves"), ("lr_find.png", "LR range test")):
            src = _png(root / file)
            if src:
                pictures += f"<h2>{heading}</h2><img class='plot' src='{src}' alt='{_e(heading)}'>"
    settings = f"<h2>Settings</h2><pre>{_e(config_text or '(no config.yaml)')}</pre>"
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>graft report: {_e(name)}</title>
<style>{_CSS}</style></head>
<body>{''.join(sections)}{pictures}{settings}
<script>{_SCRIPT}</script></body></html>
"""
    return write_atomic(target / "report.html", page)


_CSS = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 24px; color: #222; max-width: 1400px; }
h1 { font-size: 22px; } h2 { font-size: 17px; margin-top: 28px; border-bottom: 1px solid #ddd; }
table.summary th { text-align: left; padding-right: 16px; font-weight: 600; }
table.grid { border-collapse: collapse; }
table.grid td, table.grid th { border: 1px solid #ddd; padding: 3px 8px; }
table.sortable th { cursor: pointer; background: #f4f4f4; } table.sortable th:hover { background: #e6eefc; }
.matrix td.cell { text-align: center; min-width: 28px; cursor: pointer; }
.matrix td.cell.miss[data-count]:not([data-count='0']) { color: #a00; font-weight: 600; }
.matrix td.selected { outline: 3px solid #e80; }
.matrix th.col { height: 110px; vertical-align: bottom; white-space: nowrap; }
.matrix th.col span { writing-mode: vertical-rl; transform: rotate(180deg); }
.matrix th.row { text-align: right; white-space: nowrap; }
.scroll { overflow-x: auto; }
.gallery { display: flex; flex-wrap: wrap; gap: 10px; }
figure { margin: 0; width: 120px; font-size: 12px; }
figure img, .missing { width: 96px; height: 96px; object-fit: cover; border: 1px solid #ccc; display: block; }
.missing { background: #eee; color: #888; text-align: center; line-height: 96px; }
.path { color: #777; word-break: break-all; }
.hint { color: #666; font-size: 12px; }
img.plot { max-width: 100%; border: 1px solid #ddd; }
pre { background: #f7f7f7; padding: 10px; overflow-x: auto; }
section.evaluation + section.evaluation { margin-top: 40px; border-top: 3px solid #ccc; }
"""

_SCRIPT = """
document.querySelectorAll('table.sortable').forEach(function (table) {
  table.querySelectorAll('th').forEach(function (th, column) {
    th.addEventListener('click', function () {
      var body = table.tBodies[0], rows = Array.from(body.rows);
      var up = th.dataset.dir !== 'up'; th.dataset.dir = up ? 'up' : 'down';
      rows.sort(function (a, b) {
        var x = a.cells[column], y = b.cells[column];
        var u = x.dataset.value !== undefined ? parseFloat(x.dataset.value) : x.textContent;
        var v = y.dataset.value !== undefined ? parseFloat(y.dataset.value) : y.textContent;
        return (u > v ? 1 : u < v ? -1 : 0) * (up ? 1 : -1);
      });
      rows.forEach(function (row) { body.appendChild(row); });
    });
  });
});
document.querySelectorAll('section.evaluation').forEach(function (section) {
  var view = section.querySelector('.cell-view'), store = section.querySelector('template.all-images');
  section.querySelectorAll('.matrix td.cell').forEach(function (cell) {
    cell.addEventListener('click', function () {
      section.querySelectorAll('.matrix td.selected').forEach(function (c) { c.classList.remove('selected'); });
      cell.classList.add('selected');
      var chosen = Array.from(store.content.querySelectorAll('figure')).filter(function (f) {
        return f.dataset.true === cell.dataset.true && f.dataset.pred === cell.dataset.pred;
      });
      var rowName = cell.parentElement.querySelector('th').textContent;
      var colName = section.querySelectorAll('.matrix th.col')[parseInt(cell.dataset.pred)].textContent;
      view.innerHTML = '<h3></h3><div class="gallery cell-gallery"></div>';
      view.querySelector('h3').textContent = chosen.length + ' image(s): true ' + rowName + ', predicted ' + colName;
      var gallery = view.querySelector('.cell-gallery');
      chosen.forEach(function (f) { gallery.appendChild(f.cloneNode(true)); });
    });
  });
});
function countLoaded() {
  var images = Array.from(document.querySelectorAll('img'));
  document.body.dataset.loadedImages = images.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length;
  document.body.dataset.images = images.length;
}
window.addEventListener('load', function () {
  var match = /cell=(\\d+),(\\d+)/.exec(decodeURIComponent(location.hash));
  if (match) {
    var cell = document.getElementById('validation-cell-' + match[1] + '-' + match[2]);
    if (cell) cell.click();
  }
  countLoaded();
  setTimeout(countLoaded, 200);
});
"""
