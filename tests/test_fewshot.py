"""Few-shot episodes on frozen features, and fitting on K images per class."""
from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from graft.cli import main
from graft.errors import DataError
from graft.recipes.fewshot import draw_episodes, fewshot, run_episodes, usable_queries


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


def test_every_shot_count_is_scored_on_the_same_queries():
    """Issue 20 #8: support comes from the largest shot count's slots, so 1-shot and 5-shot
    episodes share their queries (and classes); a 1-shot support is part of the 5-shot one."""
    _, labels = _separable(n_per_class=8, classes=6)
    one = list(draw_episodes(labels, 4, 1, 20, queries=3, seed=2, support_slots=5))
    five = list(draw_episodes(labels, 4, 5, 20, queries=3, seed=2, support_slots=5))
    for (support_1, query_1), (support_5, query_5) in zip(one, five):
        assert np.array_equal(query_1, query_5) and len(query_1) == 4 * 3
        assert set(support_1) <= set(support_5) and not set(support_5) & set(query_5)
    assert usable_queries(labels, 5, 15) == 3


def test_fewshot_prints_the_queries_it_really_scored(digits_dir, tmp_path):
    """Issue 20 #8: 12 images per class, 5 shots: 7 queries per class are left, not 15."""
    with pytest.warns(UserWarning, match="--queries 15: class '0' has 12 readable image\\(s\\), so every episode "
                                         "scores 7 queries per class after 5 support images"):
        rows = fewshot(digits_dir, ways=3, shots="1,5", episodes=4, queries=15, image_size=64, progress=False)
    assert [r.queries for r in rows] == [7, 7, 7, 7] and "(4 episodes, 7 queries per class)" in rows[0].text()


def test_copies_that_can_be_support_and_query_are_warned(digits_dir, tmp_path):
    """Issue 20 #6 for fewshot: the scored queries and the support come from one folder."""
    import shutil

    data = shutil.copytree(digits_dir, tmp_path / "data")
    shutil.copy2(data / "4" / "0000.png", data / "4" / "copy.png")
    with pytest.warns(UserWarning, match=f"1 image\\(s\\) of {data} have identical copies .* as support and "):
        fewshot(data, ways=2, shots="1", episodes=2, queries=2, heads="prototype", image_size=64, progress=False)


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
