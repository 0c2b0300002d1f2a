"""Few-shot episodes on frozen features, and fitting on K images per class."""
from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from graft.cli import main
from graft.errors import DataError
from graft.recipes.fewshot import run_episodes


def _separable(n_per_class=20, classes=8, dim=16, spread=0.05, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(classes, dim)) * 3
    labels = np.repeat(np.arange(classes), n_per_class)
    return centres[labels] + spread * rng.normal(size=(len(labels), dim)), labels


def test_separated_classes_score_100_percent():
    features, labels = _separable()
    for head in ("prototype", "logreg"):
        result = run_episodes(features, labels, ways=5, shots=1, episodes=50, queries=5, head=head)
        assert result.mean == 1.0


def test_episodes_repeat_with_a_seed_and_differ_without():
    features, labels = _separable(spread=2.5)
    a = run_episodes(features, labels, 5, 1, 40, 5, seed=3)
    b = run_episodes(features, labels, 5, 1, 40, 5, seed=3)
    c = run_episodes(features, labels, 5, 1, 40, 5, seed=4)
    assert a == b and a.mean != c.mean


def test_interval_shrinks_with_more_episodes():
    features, labels = _separable(spread=2.5)
    few = run_episodes(features, labels, 5, 1, 25, 5, seed=0)
    many = run_episodes(features, labels, 5, 1, 400, 5, seed=0)
    assert 0.2 < few.mean < 1.0
    assert many.interval < few.interval / 2.5  # about 1 / sqrt(16)


def test_fewshot_cli_on_real_digits(digits_dir):
    result = CliRunner().invoke(main, ["fewshot", str(digits_dir), "--ways", "5", "--shots", "1,5", "--episodes",
                                       "30", "--queries", "5", "--image-size", "64", "--json", "-q"])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.output.splitlines() if line.startswith("{")]
    by = {(r["shots"], r["head"]): r for r in rows}
    assert set(by) == {(1, "prototype"), (1, "logreg"), (5, "prototype"), (5, "logreg")}
    assert by[(5, "prototype")]["mean"] > by[(1, "prototype")]["mean"] > 0.2  # chance is 0.2


def test_too_many_shots_is_one_line(digits_dir, tmp_path):
    result = CliRunner().invoke(main, ["fewshot", str(digits_dir), "--shots", "12", "-q"])
    assert result.exit_code == 2 and "--shots 12 is too large" in result.output
    result = CliRunner().invoke(main, ["fit", str(digits_dir), "--shots", "20", "-o", str(tmp_path / "r"),
                                       "--image-size", "64", "-q"])
    assert result.exit_code == 2 and "--shots 20 is larger than class" in result.output


def test_fit_on_k_images_per_class(digits_dir, tmp_path):
    from graft.recipes.frozen import fit_frozen

    result = fit_frozen(digits_dir, tmp_path / "run", val_fraction=0.25, shots=3, image_size=64, progress=False)
    assert result.metrics["n_train"] == 30 and result.metrics["n_val"] == 30
    with pytest.raises(DataError):
        fit_frozen(digits_dir, tmp_path / "run2", val_fraction=0.25, shots=10, image_size=64, progress=False)
