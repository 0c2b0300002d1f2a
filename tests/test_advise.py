"""The strategy advisor: LogME and LEEP where the answer is known, the quadrant rule, the JSON
schema, `graft auto` end to end, and bad input."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from click.testing import CliRunner
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


def test_quadrants_and_input_size():
    from graft.recipes.advise import (
        LARGE_PER_CLASS,
        SIMILAR_CONFIDENCE,
        choose_strategy,
        quadrant,
        recommended_input_size,
    )

    assert quadrant(LARGE_PER_CLASS - 1, 0.01, 0.0) == ("small", "similar")
    assert quadrant(LARGE_PER_CLASS, -0.01, 1.0) == ("large", "different")
    assert quadrant(10, None, SIMILAR_CONFIDENCE) == ("small", "similar")  # no inner layers: confidence decides
    assert quadrant(10, None, SIMILAR_CONFIDENCE - 0.01) == ("small", "different")
    assert choose_strategy("small", "similar", 60)[0] == "frozen-last"
    assert choose_strategy("small", "different", 10)[0] == "frozen-inner"
    assert choose_strategy("small", "different", 150)[0] == "frozen-inner"
    assert choose_strategy("large", "similar", 800)[0] == "finetune-all"
    assert recommended_input_size(28) == 64 and recommended_input_size(16) == 64
    assert recommended_input_size(60) == 128 and recommended_input_size(500) is None


def test_advice_json_schema(digits_dir):
    code, output = _cli("advise", digits_dir, "--backbones", "tf_efficientnet_lite0", "--layers", "blocks.4", "--json")
    assert code == 0, output
    advice = json.loads(output)
    assert advice["schema"] == 1 and advice["n_classes"] == 10 and advice["image_size"] == 64
    assert {"leep", "source_confidence", "quadrant", "strategy", "backbone", "layer", "head", "command",
            "estimated_seconds", "candidates", "reasons"} <= set(advice)
    assert advice["strategy"] in ("frozen-last", "frozen-inner", "finetune-top", "finetune-all")
    assert advice["layer_gap"] is not None
    assert [c["layer"] for c in advice["candidates"]].count(None) == 1 and len(advice["candidates"]) == 2
    assert advice["command"][:2] in (["graft", "fit"], ["graft", "finetune"])
    assert advice["similarity"] == "different", "8x8 digits are nothing like ImageNet photos"


@needs_shared
def test_auto_runs_the_recommendation_and_keeps_the_advice(hymenoptera_small, tmp_path):
    train, val = hymenoptera_small
    code, output = _cli("auto", train, "--val", val, "--backbones", "tf_efficientnet_lite0", "--layers", "blocks.5",
                        "-o", tmp_path / "run", "-q")
    assert code == 0, output
    assert "expected" in output and "recommended:" in output
    advice = json.loads((tmp_path / "run" / "advice.json").read_text())
    assert advice["similarity"] == "similar" and advice["strategy"] == "frozen-last"
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["accuracy"] > 0.7 and (tmp_path / "run" / "model" / "graft.json").exists()


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
