"""report.html in a real browser: headless Chromium opens the page of a real run, and what it
renders must agree with metrics.json and predictions.csv; a click on a matrix cell shows the
images of that cell."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections import Counter
from html import unescape

import pytest

from conftest import SHARED_DATASETS
from graft.recipes.frozen import fit_frozen
from graft.reporting.tables import read_predictions

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium not installed (`make test` "
                                    "installs Debian's chromium when run as root)")


def _browser(*args, timeout=60) -> str:
    command = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
               "--virtual-time-budget=4000", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout).stdout


@pytest.fixture(scope="module")
def real_run(tmp_path_factory, request):
    """A real small run: hymenoptera photos when the shared datasets are here, else digits."""
    root = tmp_path_factory.mktemp("report")
    if (SHARED_DATASETS / "hymenoptera").is_dir():
        train, val = request.getfixturevalue("hymenoptera_small")
        result = fit_frozen(train, root / "run", val_dir=val, image_size=96, progress=False)
    else:
        result = fit_frozen(request.getfixturevalue("digits_dir"), root / "run", val_fraction=0.5, image_size=64,
                            progress=False)
    return result.run_dir


def _section(dom: str, name: str) -> str:
    return dom.split(f'<section id="{name}"', 1)[1].split("</section>", 1)[0]


@needs_chromium
def test_report_renders_what_metrics_say_and_a_cell_click_shows_its_images(real_run, tmp_path):
    metrics = json.loads((real_run / "metrics.json").read_text())
    rows = read_predictions(real_run / "predictions.csv")
    classes = list(metrics["per_class"])
    pairs = Counter((classes.index(r["true_class"]), classes.index(r["predicted_class"])) for r in rows)
    wrong = [pair for pair in pairs if pair[0] != pair[1]]
    chosen = max(wrong, key=pairs.get) if wrong else max(pairs, key=pairs.get)

    page = real_run / "report.html"
    assert page.exists(), "fit writes report.html"
    dom = _browser("--dump-dom", f"{page.as_uri()}#cell={chosen[0]},{chosen[1]}")
    section = _section(dom, "validation")

    # the per-class table
    table = section.split('class="grid sortable per-class"', 1)[1].split("</table>", 1)[0]
    table_rows = re.findall(r"<tr><td>([^<]*)</td>.*?<td data-value=\"(\d+)\">\d+</td></tr>", table)
    shown = {unescape(m[0]): int(m[1]) for m in table_rows}
    assert shown == {name: row["support"] for name, row in metrics["per_class"].items()}
    # the confusion matrix: every image once, the diagonal is the correct ones
    cells = {(int(t), int(p)): int(n) for t, p, n in
             re.findall(r'data-true="(\d+)" data-pred="(\d+)" data-count="(\d+)"', section)}
    assert sum(cells.values()) == metrics["n_val"] == len(rows)
    assert sum(n for (t, p), n in cells.items() if t == p) == round(metrics["accuracy"] * metrics["n_val"])
    assert all(cells[pair] == count for pair, count in pairs.items())
    # the mistakes gallery
    mistakes = section.split('class="gallery mistakes"', 1)[1].split("</div>", 1)[0]
    assert mistakes.count("<figure") == sum(1 for r in rows if r["correct"] != "1")
    # every picture decoded in the browser
    loaded = re.search(r'data-loaded-images="(\d+)"', dom)
    total = re.search(r'data-images="(\d+)"', dom)
    assert loaded and total and int(total.group(1)) > 0 and loaded.group(1) == total.group(1)
    # the clicked cell shows exactly its images
    view = section.split('class="cell-view"', 1)[1].split("<h2>", 1)[0]
    expected = sorted(r["path"] for r in rows
                      if (classes.index(r["true_class"]), classes.index(r["predicted_class"])) == chosen)
    assert sorted(unescape(p) for p in re.findall(r'data-path="([^"]+)"', view)) == expected
    assert f"{len(expected)} image(s): true {classes[chosen[0]]}" in unescape(view)

    screenshot = tmp_path / "report.png"
    _browser(f"--screenshot={screenshot}", "--window-size=1280,1600", f"{page.as_uri()}#cell={chosen[0]},{chosen[1]}")
    assert screenshot.stat().st_size > 20_000


def test_report_command_rewrites_it_and_escapes_names(real_run, tmp_path):
    from click.testing import CliRunner

    from graft.cli import main

    run = tmp_path / "run"
    shutil.copytree(real_run, run)
    (run / "report.html").unlink()
    result = CliRunner().invoke(main, ["report", str(run)])
    assert result.exit_code == 0 and (run / "report.html").exists()
    text = (run / "report.html").read_text()
    assert "<script>" in text and "http://" not in text and "https://" not in text, "self-contained"
    result = CliRunner().invoke(main, ["report", str(tmp_path)])
    assert result.exit_code == 2 and "no metrics.json" in result.output


def test_class_names_are_text_not_markup(digits_dir, tmp_path):
    data = shutil.copytree(digits_dir, tmp_path / "data")
    (data / "3").rename(data / "<b>3 & 三")
    run = fit_frozen(data, tmp_path / "run", image_size=64, progress=False).run_dir
    text = (run / "report.html").read_text()
    assert "&lt;b&gt;3 &amp; 三" in text and "<b>3" not in text
