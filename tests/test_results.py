"""Per-image predictions, honest test scores, a final refit, and test-time augmentation."""
from __future__ import annotations

import csv
import json
import math

import numpy as np
from click.testing import CliRunner
from PIL import Image

from graft.cli import main
from graft.recipes.frozen import fit_frozen


def _rows(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_predictions_csv_split_csv_and_top_k(digits_dir, tmp_path):
    result = fit_frozen(digits_dir, tmp_path / "run", val_fraction=0.25, image_size=64, progress=False)
    rows = _rows(result.run_dir / "predictions.csv")
    assert len(rows) == result.metrics["n_val"]
    assert sum(int(r["correct"]) for r in rows) == round(result.metrics["accuracy"] * len(rows))
    for row in rows:
        assert math.isclose(float(row["loss"]), -math.log(float(row["true_class_probability"])),
                            rel_tol=1e-3, abs_tol=1e-4)  # the CSV rounds to 6 decimals
        assert (row["true_class"] == row["predicted_class"]) == (row["correct"] == "1")
        assert row["split"] == "val"
    top = result.metrics["top_k_accuracy"]
    assert set(top) == {"3", "5"} and result.metrics["accuracy"] <= top["3"] <= top["5"]
    split = _rows(result.run_dir / "split.csv")
    assert {r["path"] for r in split if r["subset"] == "val"} == {r["path"] for r in rows}
    assert len(split) == sum(1 for p in digits_dir.rglob("*.png"))


def test_test_set_is_scored_once_and_kept_apart(digits_dir, tmp_path):
    import shutil

    test_dir = shutil.copytree(digits_dir, tmp_path / "test")  # the training folder itself is refused
    code = CliRunner().invoke(main, ["fit", str(digits_dir), "--val-split", "0.25", "--test", str(test_dir),
                                     "--image-size", "64", "-o", str(tmp_path / "run"), "-q"])
    assert code.exit_code == 0, code.output
    assert "test (scored once, model chosen on validation): accuracy" in code.output
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    test = json.loads((tmp_path / "run" / "test" / "metrics.json").read_text())
    assert metrics["test"]["accuracy"] == test["accuracy"] and metrics["test"]["n_test"] == 120
    assert metrics["n_val"] == 30 and test["n_test"] == 120
    assert {r["split"] for r in _rows(tmp_path / "run" / "test" / "predictions.csv")} == {"test"}


def test_final_refit_uses_validation_images_with_the_chosen_c(digits_dir, tmp_path):
    from graft.artifacts.model import GraftModel

    plain = fit_frozen(digits_dir, tmp_path / "plain", val_fraction=0.25, image_size=64, progress=False)
    final = fit_frozen(digits_dir, tmp_path / "final", val_fraction=0.25, image_size=64, final=True,
                       progress=False)
    assert final.metrics["accuracy"] == plain.metrics["accuracy"], "validation scores the model before the refit"
    info = json.loads((final.run_dir / "model" / "graft.json").read_text())["training"]
    assert info["final_refit"] and info["n_fitted"] == 120 and info["head_params"] == plain.metrics["head_params"]
    a, b = GraftModel.load(plain.run_dir), GraftModel.load(final.run_dir)
    assert not np.allclose(a.head.fc.weight.detach().numpy(), b.head.fc.weight.detach().numpy())


def test_finetune_scores_a_test_folder(digits_dir, tmp_path):
    import shutil

    from graft.recipes.finetune import finetune

    test_dir = shutil.copytree(digits_dir, tmp_path / "test")
    result = finetune(digits_dir, tmp_path / "ft", stages="head:2", image_size=64, test_dir=test_dir,
                      progress=False)
    assert result.metrics["test"]["n_test"] == 120
    assert len(_rows(tmp_path / "ft" / "test" / "predictions.csv")) == 120


def test_tta_flip_averages_the_image_and_its_mirror(digits_dir, tmp_path):
    # 56 px: the resize makes the short side 64, and 64 - 56 is even, so the centre crop of a
    # mirrored file is exactly the mirror of the centre crop.
    from graft.artifacts.model import GraftModel

    run = fit_frozen(digits_dir, tmp_path / "run", image_size=56, progress=False).run_dir
    photo = Image.open(next((digits_dir / "3").iterdir())).convert("RGB").resize((64, 80))
    photo.save(tmp_path / "plain.png")
    photo.transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(tmp_path / "mirrored.png")
    model = GraftModel.load(run)
    _, plain = model.predict_paths([tmp_path / "plain.png"], progress=False)
    _, mirrored = model.predict_paths([tmp_path / "mirrored.png"], progress=False)
    _, tta = model.predict_paths([tmp_path / "plain.png"], tta="flip", progress=False)
    assert not np.allclose(plain, mirrored, atol=1e-3), "the mirror must change the scores for this to test anything"
    assert np.allclose(tta, (plain + mirrored) / 2, atol=1e-5)
    out = CliRunner().invoke(main, ["predict", str(run), str(tmp_path / "plain.png"), "--tta", "flip", "--json",
                                    "-q", "-k", "10"])
    top = json.loads(out.output.splitlines()[-1])["top"]
    classes = model.classes
    assert all(abs(t["probability"] - tta[0][classes.index(t["class"])]) < 1e-5 for t in top)


def test_finetune_final_refit_trains_again_for_the_chosen_epochs(digits_dir, tmp_path):
    from graft.recipes.finetune import finetune
    from graft.train.stages import parse_stages, truncated_plan

    assert truncated_plan(parse_stages("head:20,top2:5"), 23) == "head:20,top2:3"
    assert truncated_plan(parse_stages("head:20,top2:5"), 4) == "head:4"
    result = finetune(digits_dir, tmp_path / "ft", stages="head:3,top1:2", image_size=64, final=True,
                      progress=False)
    info = json.loads((result.run_dir / "model" / "graft.json").read_text())["training"]
    best = result.metrics["best_epoch"]
    assert info["final_refit"] and info["n_fitted"] == 120
    assert info["final_plan"] == truncated_plan(parse_stages("head:3,top1:2"), best)
    final_history = (result.run_dir / "history-final.jsonl").read_text().splitlines()
    assert len(final_history) == best and info["epochs_run"] == best == info["best_epoch"]  # the refit keeps its last
