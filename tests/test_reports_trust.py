"""A run's reports survive hostile names and hand-edited files (issue 30, items 12, 15, 19):
class folders named like TeX maths, a file name with a comma, a quote, a newline and a carriage
return; every CSV graft writes reads back with csv.reader; `graft report` on an edited
metrics.json is one line, exit 2."""
from __future__ import annotations

import csv
import io
import json
import shutil
import warnings

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from graft.cli import main

CLASSES = ["$\\undefinedcmd{x}$", "sale_$^$", "cost $5 to $10"]
ODD_NAME = 'a,b"c\nd\re.png'


@pytest.fixture(scope="module")
def hostile_run(digits_dir, tmp_path_factory):
    data = tmp_path_factory.mktemp("maths") / "data"
    for digit, name in enumerate(CLASSES):
        (data / name).mkdir(parents=True)
        for k, image in enumerate(sorted((digits_dir / str(digit)).iterdir())[:6]):
            shutil.copy(image, data / name / (ODD_NAME if (digit, k) == (1, 0) else image.name))
    out = data.parent / "run"
    result = CliRunner().invoke(main, ["fit", str(data), "-o", str(out), "--image-size", "64", "--val-split", "0.5",
                                       "-q"])
    return data, out, result


def test_fit_with_maths_class_names_writes_everything(hostile_run):
    _, out, result = hostile_run
    assert result.exit_code == 0, result.output
    for name in ("config.yaml", "split.csv", "report.html", "confusion_matrix.png", "predictions.csv",
                 "metrics.json", "model"):
        assert (out / name).exists(), name
    assert "could not draw" not in result.output  # drawn, as text: parse_math is off
    assert Image.open(out / "confusion_matrix.png").size[0] > 300
    assert list(json.loads((out / "metrics.json").read_text())["per_class"]) == sorted(CLASSES)


def test_every_csv_round_trips(hostile_run):
    from graft.reporting.tables import read_predictions

    data, out, _ = hostile_run
    odd = str(data / "sale_$^$" / ODD_NAME)
    with open(out / "split.csv", newline="") as handle:
        split = list(csv.reader(handle))
    assert split[0] == ["path", "class", "subset"] and len(split) == 1 + 18
    assert [row[:2] for row in split if row[0] == odd] == [[odd, "sale_$^$"]]
    with open(out / "predictions.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 9 and {row["true_class"] for row in rows} == set(CLASSES)
    assert [row["path"] for row in read_predictions(out / "predictions.csv")] == [row["path"] for row in rows]
    predicted = CliRunner().invoke(main, ["predict", str(out), odd, "--csv", "-q"])
    lines = list(csv.reader(io.StringIO(predicted.stdout, newline="")))
    assert [row[0] for row in lines[1:]] == [odd] * 3 and {row[2] for row in lines[1:]} == set(CLASSES)


def test_a_picture_that_fails_only_warns(tmp_path):
    from graft.reporting.plots import confusion_matrix_png, training_curves_png

    y = np.array([0, 1, 2, 1])
    with pytest.warns(UserWarning, match="could not draw"):
        assert confusion_matrix_png(y, y, CLASSES, tmp_path / "missing" / "cm.png") is None
    with pytest.warns(UserWarning, match="could not draw .*KeyError"):  # a history.jsonl row cut short
        assert training_curves_png([{"epoch": 1, "stage": "head"}], tmp_path / "curves.png") is None
    assert not (tmp_path / "curves.png").exists()  # no half-drawn picture left
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # drawn without a warning: the names are text
        assert confusion_matrix_png(y, y, CLASSES, tmp_path / "cm.png", CLASSES[0]).is_file()


def test_validation_title_names_the_scored_folder(tmp_path):
    from graft.reporting.summary import validation_title

    assert validation_title(tmp_path / "val", tmp_path / "train", "logreg") == "validation: val (logreg)"
    assert validation_title(tmp_path / "train", tmp_path / "train", "fine-tuned") == \
        "validation: held out of train (fine-tuned)"


@pytest.mark.parametrize("edit, words", [
    (lambda m: m.__setitem__("per_class", 5), '"per_class" is 5'),
    (lambda m: m["per_class"].__setitem__(CLASSES[0], {"f1": "x"}), '"per_class" -> '),
    (lambda m: m.__setitem__("accuracy", "high"), '"accuracy" is "high"'),
    (lambda m: m.__setitem__("skipped", 3), '"skipped" is not a list'),
    (lambda m: m.__setitem__("top_k_accuracy", [1]), '"top_k_accuracy"'),
], ids=["per-class-int", "per-class-row", "accuracy", "skipped", "top-k"])
def test_report_on_edited_metrics_is_one_line(hostile_run, tmp_path, edit, words):
    _, out, _ = hostile_run
    run = tmp_path / "run"
    shutil.copytree(out, run)
    metrics = json.loads((run / "metrics.json").read_text())
    edit(metrics)
    (run / "metrics.json").write_text(json.dumps(metrics))
    result = CliRunner().invoke(main, ["report", str(run)])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert result.output.startswith(f"error: {run / 'metrics.json'}: {words}"), result.output


def test_report_on_edited_model_json_is_one_line(hostile_run, tmp_path):
    _, out, _ = hostile_run
    run = tmp_path / "run"
    shutil.copytree(out, run)
    model = json.loads((run / "model" / "graft.json").read_text())
    model["training"] = 7
    (run / "model" / "graft.json").write_text(json.dumps(model))
    result = CliRunner().invoke(main, ["report", str(run)])
    assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1
    assert "graft.json" in result.output and "Traceback" not in result.output
