"""graft select on real images: the picks are more diverse than random sets of the same size,
labelled images are never picked again, the CSV and contact sheet list the picks in order, and
bad input is one line, exit 2."""
from __future__ import annotations

import csv
import json
import shutil

import numpy as np
from click.testing import CliRunner

from graft.cli import main
from graft.clustering import mean_pairwise_distance, select_next, select_typical
from graft.features.extractor import FeatureExtractor
from graft.recipes.select import select, selected_paths


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def _flat(digits_dir, into):
    into.mkdir()
    for path in sorted(digits_dir.glob("*/*.png")):
        shutil.copy2(path, into / f"{path.parent.name}-{path.name}")
    return into


def test_picks_are_more_diverse_than_random_and_cover_the_digits(digits_dir, tmp_path):
    pool = _flat(digits_dir, tmp_path / "pool")
    result = select(str(pool), tmp_path / "run", n=10, progress=False)
    picked = selected_paths(result.run_dir)
    assert len(picked) == len(set(picked)) == 10
    features = FeatureExtractor().fit().extract(sorted(pool.iterdir()))
    index = {p: i for i, p in enumerate(features.paths)}
    X = features.vectors
    mine = mean_pairwise_distance(X[[index[p] for p in picked]])
    rng = np.random.default_rng(0)
    random = [mean_pairwise_distance(X[rng.choice(len(X), 10, replace=False)]) for _ in range(30)]
    assert mine > np.mean(random) and json.loads((result.run_dir / "metrics.json").read_text())["diversity"] > 0
    digits = {p.split("/")[-1].split("-")[0] for p in picked}
    assert len(digits) >= 6  # 10 random picks of 10 digits cover 6.5 on average; typical picks spread wider
    with open(result.run_dir / "selected.csv", newline="") as handle:
        assert [int(r["rank"]) for r in csv.DictReader(handle)] == list(range(1, 11))
    assert (result.run_dir / "report.html").read_text().count("<figure") == 10


def test_labelled_images_are_not_picked_again(digits_dir, tmp_path):
    pool = _flat(digits_dir, tmp_path / "pool")
    labelled = tmp_path / "labelled"
    for name in sorted(p.name for p in pool.iterdir())[::12][:4]:
        (labelled / name.split("-")[0]).mkdir(parents=True)
        (labelled / name.split("-")[0] / name).symlink_to(pool / name)
    for strategy in ("typical-uncertain", "typical", "uncertain"):
        result = select(str(pool), tmp_path / strategy, n=8, labelled=str(labelled), strategy=strategy,
                        progress=False)
        picked = {p.split("/")[-1] for p in selected_paths(result.run_dir)}
        assert len(picked) == 8 and not picked & {p.name for p in labelled.rglob("*.png")}


def test_library_functions_rank_pool_indices():
    rng = np.random.default_rng(1)
    X = np.concatenate([c + rng.normal(size=(30, 32)) for c in rng.normal(size=(4, 32)) * 4])
    first = select_typical(X, 4)
    assert sorted(first // 30) == [0, 1, 2, 3]  # one pick in each of the four groups
    labelled = X[[0, 30]]
    nxt = select_next(X, 2, labelled, np.array([0, 1]))
    assert sorted(nxt // 30) == [2, 3]  # the groups no label covers


def test_bad_input_is_one_line_exit_2(digits_dir, tmp_path):
    missing = run("select", tmp_path / "missing", "-n", "3", "-o", tmp_path / "run", "-q")
    assert missing.exit_code == 2 and missing.output.startswith("error:") and "does not exist" in missing.output
    too_many = run("select", digits_dir, "-n", "100000", "-o", tmp_path / "run", "-q")
    assert too_many.exit_code == 2 and too_many.output.startswith("error: -n 100000 is more than"), too_many.output
    assert len(too_many.output.strip().splitlines()) == 1 and not (tmp_path / "run").exists()


def test_a_pool_of_repeated_images_says_so_in_one_graft_warning(digits_dir, tmp_path):
    import warnings

    pool = tmp_path / "pool"
    pool.mkdir()
    for i, path in enumerate(sorted(digits_dir.glob("*/*.png"))[::12][:4]):
        for copy in range(3):
            shutil.copy2(path, pool / f"{i}-{copy}.png")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = select(str(pool), tmp_path / "run", n=6, progress=False)
    said = [str(w.message) for w in caught]
    assert not any("Number of distinct clusters" in m for m in said), said
    assert [m for m in said if "distinct images" in m] == [
        "the pool holds only 4 distinct images (the others repeat them), so 4 were picked, not 6"], said
    assert len(selected_paths(result.run_dir)) == 4


def test_byte_copies_of_labelled_images_are_left_out_with_one_warning(digits_dir, tmp_path):
    import warnings

    pool = tmp_path / "pool"
    pool.mkdir()
    for path in sorted(digits_dir.glob("*/*.png"))[::6]:
        shutil.copy2(path, pool / f"{path.parent.name}-{path.name}")
    copied = sorted(p.name for p in pool.iterdir())[::5]
    labelled = tmp_path / "labelled"
    for name in copied:
        (labelled / name.split("-")[0]).mkdir(parents=True, exist_ok=True)
        shutil.copy2(pool / name, labelled / name.split("-")[0] / f"copy-{name}")
    n = len(list(pool.iterdir())) - len(copied)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = select(str(pool), tmp_path / "run", n=n, labelled=str(labelled), progress=False)
    said = [str(w.message) for w in caught if "byte copies of labelled" in str(w.message)]
    assert len(said) == 1 and said[0].startswith(f"{len(copied)} image(s) of {pool}"), said
    picked = {p.split("/")[-1] for p in selected_paths(result.run_dir)}
    assert len(picked) == n and not picked & set(copied)
