"""The CLI end to end, on real images, as a user runs it; bad input gives one clear line."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
from click.testing import CliRunner

from graft.cli import main


def run(*args):
    result = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    return result


@pytest.fixture(scope="module")
def digits_run(digits_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "run"
    result = run("fit", digits_dir, "--val-split", "0.25", "--image-size", "96", "-o", out, "-q")
    assert result.exit_code == 0, result.output
    return out, result


def test_fit_prints_report_and_writes_run(digits_run):
    out, result = digits_run
    assert "precision" in result.output and "accuracy" in result.output
    assert json.loads((out / "metrics.json").read_text())["n_val"] == 30


def test_predict_table_json_csv(digits_run, digits_dir):
    out, _ = digits_run
    image = sorted((digits_dir / "7").iterdir())[0]
    table = run("predict", out, image, "-k", "2", "-q")
    assert table.exit_code == 0 and str(image) in table.output
    lines = run("predict", out, digits_dir / "3", "--json", "-q").output.strip().splitlines()
    assert len(lines) == 12
    first = json.loads(lines[0])
    assert len(first["top"]) == 3 and abs(sum(t["probability"] for t in first["top"])) <= 1.0001
    csv_out = run("predict", out, image, "--csv", "-k", "1", "-q").output.splitlines()
    assert csv_out[0] == "path,rank,class,probability,novelty,unfamiliar" and csv_out[1].startswith(str(image))


def test_evaluate_and_export(digits_run, digits_dir):
    out, _ = digits_run
    result = run("evaluate", out, digits_dir, "-q")
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "eval" / digits_dir.name / "metrics.json").read_text())
    assert metrics["n_val"] == 120 and metrics["accuracy"] > 0.5
    exported = run("export", out, "--format", "onnx")
    assert exported.exit_code == 0 and (out / "model.onnx").is_file()
    assert "max |diff|" in exported.output


def test_layers_command_lists_indices_names_shapes():
    result = run("layers", "tf_efficientnet_lite0")
    assert result.exit_code == 0
    assert "blocks.6.0" in result.output and "320x7x7" in result.output
    rows = [json.loads(line) for line in run("layers", "--json").output.splitlines()]
    assert rows[0]["name"] == "conv_stem" and rows[-1]["name"] == "classifier"


def test_extract_writes_features(digits_dir, tmp_path):
    result = run("extract", digits_dir, "--layer", "blocks.4", "--image-size", "96", "-o", tmp_path / "f.npz", "-q")
    assert result.exit_code == 0, result.output
    import numpy as np

    with np.load(tmp_path / "f.npz", allow_pickle=False) as z:
        assert z["features"].shape == (120, 112) and len(z["labels"]) == 120
    assert "labelled by 10 class folders (0, 1, 2, 3, 4, ...)" in result.output


def test_extract_reads_unlabelled_images_flat_or_nested(digits_dir, tmp_path):
    """Issue 20 #19: a folder of unlabelled images (flat, or nested in one or mixed folders)."""
    import numpy as np

    flat, nested = tmp_path / "flat", tmp_path / "nested"
    flat.mkdir()
    (nested / "2024" / "may").mkdir(parents=True)
    for i, image in enumerate(sorted((digits_dir / "3").iterdir())[:4]):
        shutil.copy2(image, flat / f"{i}.png")
        shutil.copy2(image, (nested / "2024" / "may" if i % 2 else nested) / f"{i}.png")  # files beside a folder
    for data in (flat, nested):
        result = run("extract", data, "--image-size", "64", "-o", tmp_path / f"{data.name}.npz", "-q")
        assert result.exit_code == 0, result.output
        assert "4 images x 1280 features, unlabelled images (no class folders)" in result.output
        with np.load(tmp_path / f"{data.name}.npz", allow_pickle=False) as z:
            assert z["features"].shape == (4, 1280) and len(z["labels"]) == 0 and len(z["classes"]) == 0
    empty = tmp_path / "empty"
    (empty / "a").mkdir(parents=True)
    result = run("extract", empty, "-o", tmp_path / "e.npz", "-q")
    assert result.exit_code == 2 and f"no images in {empty}" in result.output, result.output


def _missing(root):
    return root / "missing"


def _single_class(root):
    (root / "one" / "a").mkdir(parents=True)
    (root / "one" / "a" / "x.png").write_bytes(b"x")
    return root / "one"


def _empty_class(root):
    (root / "e" / "a").mkdir(parents=True)
    (root / "e" / "empty_class").mkdir()
    (root / "e" / "a" / "x.png").write_bytes(b"x")
    return root / "e"


@pytest.mark.parametrize("make_bad, message", [
    (_missing, "does not exist"), (_single_class, "only one class"), (_empty_class, "empty_class"),
])
def test_bad_data_folders_are_one_clear_line(tmp_path, make_bad, message):
    data = make_bad(tmp_path)
    result = CliRunner().invoke(main, ["fit", str(data), "-o", str(tmp_path / "r"), "-q"])
    assert result.exit_code == 2
    assert result.output.startswith("error:") and message in result.output, result.output
    assert "Traceback" not in result.output


def test_bad_files_are_skipped_listed_and_strict_fails(digits_dir, tmp_path):
    data = shutil.copytree(digits_dir, tmp_path / "d")
    (data / "4" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    result = CliRunner().invoke(main, ["fit", str(data), "--image-size", "96", "-o", str(tmp_path / "r"), "-q"])
    assert result.exit_code == 0, result.output
    assert "warning: skipping" in result.output and "broken.png" in result.output
    skipped = json.loads((tmp_path / "r" / "metrics.json").read_text())["skipped"]
    assert [s["path"].endswith("broken.png") for s in skipped] == [True]
    strict = CliRunner().invoke(main, ["fit", str(data), "--image-size", "96", "--strict", "-o", str(tmp_path / "s"),
                                       "-q"])
    assert strict.exit_code == 2 and "broken.png" in strict.output


def test_module_entry_point_runs_as_a_real_process(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "graft", "fit", str(tmp_path / "nothing"), "-o", str(tmp_path / "r")],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert "error:" in proc.stderr and "Traceback" not in proc.stderr


def test_real_hymenoptera_subset_end_to_end(hymenoptera_small, tmp_path):
    train, val = hymenoptera_small
    out = tmp_path / "run"
    result = run("fit", train, "--val", val, "--image-size", "160", "-o", out, "-q")
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n_train"] == 20 and metrics["n_val"] == 12
    assert metrics["accuracy"] >= 0.75  # ants vs bees from 20 images; full-data numbers are in BENCHMARKS.md
    predicted = run("predict", out, val / "bees", "--json", "-q").output.splitlines()
    assert len(predicted) == 6
