"""RUN/report.html of ``graft audit``: each finding with its image (and the other image of a
copy or leak) side by side, one section per kind of issue; self-contained (inline thumbnails)."""
from __future__ import annotations

import base64
import io
from pathlib import Path

from graft._io.files import write_atomic

THUMBNAIL_PX = 160
MAX_SHOWN = 200  # rows with pictures per issue; the rest are in audit.csv

_TEMPLATE = """<!doctype html>
<html><head><meta charset="utf-8"><title>graft audit: {{ root }}</title>
<style>
body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}
table{border-collapse:collapse}td,th{border-bottom:1px solid #ddd;padding:4px 8px;text-align:left;vertical-align:top}
img{max-width:{{ px }}px;max-height:{{ px }}px}.path{font-size:80%;color:#555;word-break:break-all;max-width:22em}
</style></head><body>
<h1>graft audit</h1>
<p>{{ n_images }} images ({% for s, n in splits.items() %}{{ s }} {{ n }}{{ ", " if not loop.last }}{% endfor %});
{{ flagged }} flagged. Nothing was moved or changed: every finding is a row of <code>audit.csv</code>.</p>
<ul>{% for issue, n in counts.items() if n %}<li><a href="#{{ issue }}">{{ issue }}</a>: {{ n }}</li>{% endfor %}</ul>
{% for issue, rows in sections.items() %}
<h2 id="{{ issue }}">{{ issue }} ({{ counts[issue] }}){% if counts[issue] > rows|length %}, the first {{ rows|length }}
shown{% endif %}</h2><p>{{ about[issue] }}</p>
<table><tr><th>image</th><th>given</th><th>suggested</th><th>score</th><th>other image</th><th>detail</th></tr>
{% for r in rows %}<tr>
<td>{% if r.thumb %}<img src="{{ r.thumb }}" alt="">{% endif %}<div class="path">{{ r.split }}: {{ r.path }}</div></td>
<td>{{ r.given }}</td><td>{{ r.suggested }}</td><td>{{ r.score }}</td>
<td>{% if r.other_thumb %}<img src="{{ r.other_thumb }}" alt="">{% endif %}{% if r.other_path %}
<div class="path">{{ r.other_split }} ({{ r.other_given }}): {{ r.other_path }}</div>{% endif %}</td>
<td>{{ r.detail }}</td></tr>{% endfor %}
</table>{% endfor %}
</body></html>
"""

ABOUT = {
    "label": "The given class is unlikely: its out-of-fold probability (score) is low; suggested is the likeliest.",
    "leak": "The same photo in two of the folders (train / val / test): a held-out score would count it twice.",
    "duplicate": "Byte-identical files in one folder.",
    "near-duplicate": "The same photo re-encoded, resized or cropped (score: feature cosine).",
    "outlier": "Far from every other image (score: cosine distance to its 10th nearest image).",
    "tiny": "Shorter side below --min-side px (score).",
    "extreme-aspect": "Longer side over --max-aspect times the shorter (score).",
    "imbalance": "A class under a third of the median class's count (score: its count / the median).",
    "unreadable": "Files that could not be decoded; no check saw them.",
}


def _thumbnail(path: str) -> str | None:
    from graft.data.decode import load_image
    from graft.errors import ImageDecodeError

    try:
        image = load_image(path, min_side=THUMBNAIL_PX)
    except (ImageDecodeError, OSError, ValueError):
        return None
    image.thumbnail((THUMBNAIL_PX, THUMBNAIL_PX))
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=75)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode()


def rewrite_audit_page(run_dir) -> Path:
    """report.html again from an audit run's audit.csv and metrics.json (``graft report RUN``);
    GraftError naming the file when either cannot be read."""
    import csv

    from graft._io.files import read_json
    from graft.errors import GraftError

    try:
        with open(Path(run_dir) / "audit.csv", newline="", encoding="utf-8", errors="surrogateescape") as handle:
            rows = list(csv.DictReader(handle))
        return write_audit_page(Path(run_dir), rows, read_json(Path(run_dir) / "metrics.json"))
    except (OSError, KeyError, TypeError, ValueError, csv.Error) as exc:
        raise GraftError(f"{run_dir}: cannot build report.html from audit.csv and metrics.json "
                         f"({type(exc).__name__}: {exc}); run graft audit again") from None


def write_audit_page(run_dir: Path, rows: list[dict], metrics: dict) -> Path:
    """Write ``run_dir/report.html`` for audit.csv's ``rows`` and the ``metrics`` counts."""
    from jinja2 import Environment

    sections: dict[str, list[dict]] = {}
    for row in rows:
        shown = sections.setdefault(row["issue"], [])
        if len(shown) < MAX_SHOWN:
            pictured = row["issue"] not in ("imbalance", "unreadable")
            shown.append({**row, "thumb": _thumbnail(row["path"]) if pictured else None,
                          "other_thumb": _thumbnail(row["other_path"]) if row["other_path"] else None})
    page = Environment(autoescape=True).from_string(_TEMPLATE).render(
        root=run_dir, n_images=metrics["n_images"], splits=metrics["splits"], flagged=metrics["n_flagged_images"],
        counts=metrics["issues"], sections=sections, about=ABOUT, px=THUMBNAIL_PX)
    return write_atomic(Path(run_dir) / "report.html", page)
