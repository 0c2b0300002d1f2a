"""The strategy advisor: LogME and LEEP where the answer is known, the quadrant rule, the JSON
schema, `graft auto` end to end, and bad input."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from markupsafe import escape  # what jinja2 autoescape writes
from PIL import Image

from conftest import needs_shared
from graft.cli import main
from graft.ranking.scores import evidence_fixed_point, leep, logme


def _cli(*args):
    result = CliRunner().invoke(main, [str(a) for a in args])
    return result.exit_code, result.output


def test_logme_prefers_features_that_determine_the_label():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, 200)
    informative = np.eye(4)[labels] @ rng.normal(size=(4, 32)) + 0.5 * rng.normal(size=(200, 32))
    noise = rng.normal(size=(200, 32))
    half = np.hstack([informative[:, :16], noise[:, :16]])
    assert logme(informative, labels) > logme(half, labels) > logme(noise, labels)


def test_logme_is_the_bayesian_evidence():
    rng = np.random.default_rng(1)
    n, d = 40, 6
    features = rng.normal(size=(n, d))
    target = (features @ rng.normal(size=d) > 0).astype(float)
    u, s, _ = np.linalg.svd(features, full_matrices=False)
    per_image, alpha, beta = evidence_fixed_point(s ** 2, u.T @ target, float(target @ target), n, d)
    # log N(t | 0, I / beta + F F^T / alpha), computed directly
    covariance = np.eye(n) / beta + features @ features.T / alpha
    _, log_det = np.linalg.slogdet(covariance)
    direct = -0.5 * (n * np.log(2 * np.pi) + log_det + target @ np.linalg.solve(covariance, target))
    assert per_image * n == pytest.approx(direct, rel=1e-9)
    # and at that alpha, beta the evidence is a maximum: nudging either lowers it
    for a, b in ((alpha * 1.2, beta), (alpha / 1.2, beta), (alpha, beta * 1.2), (alpha, beta / 1.2)):
        c = np.eye(n) / b + features @ features.T / a
        other = -0.5 * (n * np.log(2 * np.pi) + np.linalg.slogdet(c)[1] + target @ np.linalg.solve(c, target))
        assert other < direct


def test_leep_rewards_source_predictions_that_determine_the_label():
    rng = np.random.default_rng(2)
    labels = rng.integers(0, 3, 300)
    aligned = np.full((300, 10), 0.01)
    aligned[np.arange(300), labels * 3] = 0.91  # each target class maps to one source class
    random = rng.dirichlet(np.ones(10), 300)
    assert leep(aligned, labels) > -0.1
    assert leep(random, labels) < leep(aligned, labels)
    assert leep(random, labels) <= 0 and leep(random, labels) > -np.log(3) - 0.1


def test_quadrant_calls_and_input_size():
    from graft.recipes.advise import (
        LARGE_PER_CLASS,
        SIMILAR_LEEP_GAIN,
        leep_gain,
        recommended_input_size,
        similarity_call,
        size_call,
    )

    assert size_call(LARGE_PER_CLASS - 1) == "small" and size_call(LARGE_PER_CLASS) == "large"
    assert leep_gain(-np.log(10), 10) == pytest.approx(0) and leep_gain(0.0, 10) == pytest.approx(1)
    assert similarity_call(0.01, SIMILAR_LEEP_GAIN) == "similar"
    assert similarity_call(-0.01, 0.9) == "different"  # the inner layers transfer better
    # upscaled digits: the last layer may win, LEEP does not reach the bar
    assert similarity_call(0.03, SIMILAR_LEEP_GAIN - 0.01) == "different"
    assert similarity_call(None, SIMILAR_LEEP_GAIN) == "similar"  # no inner layer measured: LEEP decides
    assert recommended_input_size(28) == 64 and recommended_input_size(16) == 64
    assert recommended_input_size(60) == 128 and recommended_input_size(500) is None


def test_checks_always_hold_the_defaults_and_fine_tune_only_within_the_budget():
    from graft.recipes.plans import ORDER, Plan, choose_checks

    plans = [Plan("defaults", "tf_efficientnet_lite0", estimated_seconds=30),
             Plan("frozen-inner", "tf_efficientnet_lite0", "blocks.5", "rbf-svm", estimated_seconds=25),
             Plan("finetune-top", "tf_efficientnet_lite0", stages="head:10,top2:3", estimated_seconds=200)]
    assert choose_checks(plans, ORDER[("small", "similar")], 600) == ["defaults", "finetune-top", "frozen-inner"]
    assert choose_checks(plans, ORDER[("small", "similar")], 0) == ["defaults", "frozen-inner"]
    assert choose_checks(plans, ORDER[("small", "different")], 200) == ["defaults", "frozen-inner"]
    assert plans[1].command("d", None, 0.25, "r") == ["graft", "fit", "d", "--val-split", "0.25", "--layer",
                                                       "blocks.5", "--head", "rbf-svm", "-o", "r"]


def test_advice_json_schema(digits_dir):
    code, output = _cli("advise", digits_dir, "--backbones", "tf_efficientnet_lite0", "--layers", "blocks.4", "--json")
    assert code == 0, output
    advice = json.loads(output)
    assert advice["schema"] == 2 and advice["n_classes"] == 10 and advice["native_size"] == 224
    assert {"leep", "leep_gain", "source_confidence", "layer_gap", "upscale_gain", "quadrant", "driver", "sure",
            "strategy", "command", "checks", "check_seconds", "plans", "measurements", "reasons"} <= set(advice)
    # 8x8 digits: measured at 224 px (the domain) and at 64 px (the resolution), last layer and blocks.4
    assert sorted((m["layer"] or "", m["image_size"]) for m in advice["measurements"]) == [
        ("", 64), ("", 224), ("blocks.4", 64), ("blocks.4", 224)]
    assert advice["resolution"] == "low" and advice["small_size"] == 64
    assert advice["similarity"] == "different", "8x8 digits are nothing like ImageNet photos"
    assert advice["checks"][0] == "defaults" and advice["strategy"] in advice["checks"]
    assert 0 <= advice["sure"] <= 1 and "domain" in advice["driver"]


def _resized(source: Path, target: Path, short_side: int) -> Path:
    for path in sorted(source.rglob("*.jpg")):
        with Image.open(path) as image:
            scale = short_side / min(image.size)
            small = image.convert("RGB").resize((round(image.width * scale), round(image.height * scale)),
                                                Image.BICUBIC)
        (target / path.parent.name).mkdir(parents=True, exist_ok=True)
        small.save(target / path.parent.name / f"{path.stem}.png")
    return target


@needs_shared
def test_low_resolution_is_not_read_as_dissimilarity(tmp_path):
    from conftest import SHARED_DATASETS, copy_subset
    from graft.recipes.advise import advise

    photos = copy_subset(SHARED_DATASETS / "hymenoptera" / "train", tmp_path / "photos", 20)
    calls = {}
    for px in (224, 32):
        folder = _resized(photos, tmp_path / f"px{px}", px)
        calls[px] = advise(folder, backbones=["tf_efficientnet_lite0"], layers=["blocks.5"], progress=False)
    assert calls[224].resolution == "fine" and calls[32].resolution == "low" and calls[32].small_size == 64
    assert calls[224].similarity == calls[32].similarity == "similar", [a.words() for a in calls.values()]
    # at the small input the inner layer wins: measured there, the old rule called these photos different
    at_64 = {m.layer: m.logme for m in calls[32].measurements if m.image_size == 64}
    assert at_64["blocks.5"] > at_64[None]


@needs_shared
def test_auto_falls_back_to_the_defaults_when_they_win(hymenoptera_small, tmp_path):
    # an early layer is the only other candidate and fine-tuning is out of budget: on ants and
    # bees graft fit's defaults beat it for real, and auto must keep them and say so
    train, val = hymenoptera_small
    code, output = _cli("auto", train, "--val", val, "--backbones", "tf_efficientnet_lite0", "--layers", "blocks.2",
                        "--budget", "0", "-o", tmp_path / "run", "-q")
    assert code == 0, output
    advice = json.loads((tmp_path / "run" / "advice.json").read_text())
    scores = {c["name"]: c["accuracy"] for c in advice["checked"]}
    assert set(scores) == {"defaults", "frozen-inner"} and scores["defaults"] > scores["frozen-inner"]
    assert advice["chosen"] == "defaults" and advice["fell_back_to_defaults"]
    assert "auto ran the defaults" in advice["verdict"] and "auto ran the defaults" in output
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["accuracy"] == pytest.approx(scores["defaults"])
    assert "graft auto: candidates scored" in (tmp_path / "run" / "report.txt").read_text()
    assert advice["auto_seconds"] > 0 and advice["auto_estimated_seconds"] > 0


def test_auto_keeps_a_candidate_that_beats_the_defaults(digits_dir, tmp_path):
    code, output = _cli("auto", digits_dir, "--backbones", "tf_efficientnet_lite0", "--layers", "blocks.4",
                        "--budget", "0", "-o", tmp_path / "run", "-q")
    assert code == 0, output
    advice = json.loads((tmp_path / "run" / "advice.json").read_text())
    scores = {c["name"]: c["accuracy"] for c in advice["checked"]}
    assert "defaults" in scores and len(scores) == 3 and not any(n.startswith("finetune") for n in scores)
    assert advice["chosen"] != "defaults" and scores[advice["chosen"]] > scores["defaults"], scores
    assert advice["final_accuracy"] == pytest.approx(max(scores.values()))
    assert "over graft fit's defaults" in output
    # the page a user opens shows every candidate's score and which one was kept
    page = (tmp_path / "run" / "report.html").read_text()
    assert "graft auto: candidates scored on validation" in page and str(escape(advice["verdict"])) in page
    for check in advice["checked"]:
        kept = "kept" if check["name"] == advice["chosen"] else ""
        assert f"<tr><td>{check['name']}</td><td>{check['accuracy']:.4f}</td>" in page
        assert f"<td>{kept}</td></tr>" in page.split(f"<tr><td>{check['name']}</td>", 1)[1].split("\n", 1)[0]


def test_bad_input_is_one_line(digits_dir, tmp_path):
    one_class = tmp_path / "one"
    shutil.copytree(digits_dir / "0", one_class / "0")
    code, output = _cli("advise", one_class)
    assert code == 2 and "only one class" in output and "Traceback" not in output
    single = tmp_path / "single"
    for c in ("a", "b"):
        (single / c).mkdir(parents=True)
        shutil.copy(next((digits_dir / "1").iterdir()), single / c / "x.png")
    code, output = _cli("advise", single)
    assert code == 2 and "fewer than two" in output
    unreadable = tmp_path / "unreadable"
    for c in ("a", "b"):
        (unreadable / c).mkdir(parents=True)
        for i in range(3):
            (unreadable / c / f"{i}.jpg").write_bytes(b"not an image")
    code, output = _cli("advise", unreadable)
    assert code == 2 and "no readable image" in output and "Traceback" not in output
    Image.new("RGB", (8, 8)).save(unreadable / "a" / "ok.png")  # sanity: the folder itself is fine
