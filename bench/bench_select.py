"""graft select against random picks (issue 25's bars), flowers17 as a flat pool, labels hidden.

Round 1: the 34 images `graft select POOL -n 34` picks (no labels) are labelled from their true
folder and graft's default head (logistic regression, C by CV, as `graft fit`) is fitted on
them; scored on the rest of the pool. Against 34 random picks (bar: +10 points). Round 2: given
graft's first 34 labels (`--labelled`), 34 more by each strategy, against the same first 34 plus
34 random (bar: +5 points). Mean over seeds; each seed seeds graft and the random draws.

    python bench/bench_select.py [--seeds 0,1,2] [--json out.json]
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import save_rows, scratch_folder  # noqa: E402
from graft.clustering.embedding import Projection  # noqa: E402
from graft.features.extractor import FeatureExtractor  # noqa: E402
from graft.heads.classical import fit_head  # noqa: E402
from graft.recipes.select import SelectConfig, select, selected_paths  # noqa: E402
from select_baselines import PROBCOVER_DELTAS, badge, coreset, probcover  # noqa: E402

DATASETS = Path(__file__).resolve().parents[2] / "shared" / "datasets"
BUDGET = 34


def flat_pool(into: Path) -> dict[str, int]:
    """flowers17's images as links in one flat folder; returns {link name: true class index}."""
    into.mkdir(parents=True)
    truth = {}
    for label, class_dir in enumerate(sorted(p for p in (DATASETS / "flowers17").iterdir() if p.is_dir())):
        for image in sorted(class_dir.iterdir()):
            os.symlink(image, into / image.name)
            truth[image.name] = label
    return truth


def labelled_folder(into: Path, names: list[str], pool: Path, truth: dict[str, int]) -> Path:
    """The picked images labelled from their true folder: into/<class index>/<name> links."""
    for name in names:
        (into / f"{truth[name]:02d}").mkdir(parents=True, exist_ok=True)
        os.symlink(pool / name, into / f"{truth[name]:02d}" / name)
    return into


def score(chosen: list[str], names: list[str], X: np.ndarray, y: np.ndarray, seed: int) -> float:
    """Accuracy on the images not chosen of graft's default head fitted on the chosen ones."""
    index = {n: i for i, n in enumerate(names)}
    picked = np.array([index[n] for n in chosen])
    rest = np.setdiff1d(np.arange(len(names)), picked)
    head = fit_head("logreg", X[picked], y[picked], 17, seed)
    return float((head.probabilities(X[rest]).argmax(1) == y[rest]).mean())


def one_seed(scratch: Path, pool: Path, names, X, y, truth, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    first = [Path(p).name for p in selected_paths(select(SelectConfig(pool=str(pool), n=BUDGET, seed=seed),
                                                         scratch / f"r1-{seed}", progress=False).run_dir)]
    random_first = list(rng.choice(names, BUDGET, replace=False))
    row = {"seed": seed, "round1_graft": score(first, names, X, y, seed),
           "round1_random": score(random_first, names, X, y, seed)}
    labelled = labelled_folder(scratch / f"labelled-{seed}", first, pool, truth)
    rest = [n for n in names if n not in set(first)]
    row["round2_random"] = score(first + list(rng.choice(rest, BUDGET, replace=False)), names, X, y, seed)
    for strategy in ("typical-uncertain", "typical", "uncertain"):
        config = SelectConfig(pool=str(pool), n=BUDGET, labelled=str(labelled), strategy=strategy, seed=seed)
        second = [Path(p).name for p in selected_paths(select(config, scratch / f"r2-{strategy}-{seed}",
                                                              progress=False).run_dir)]
        assert not set(second) & set(first), "a labelled image was picked again"
        row[f"round2_{strategy}"] = score(first + second, names, X, y, seed)
    row.update(literature(first, names, X, y, seed))
    return row


def literature(first: list[str], names: list[str], X: np.ndarray, y: np.ndarray, seed: int) -> dict:
    """Round 2 by the rules of select_baselines.py, in graft's projection of the pool."""
    index = {n: i for i, n in enumerate(names)}
    known = np.array([index[n] for n in first])
    Z = Projection(seed=seed).fit_transform(X)
    picks = {f"probcover{d}": probcover(Z, known, BUDGET, d) for d in PROBCOVER_DELTAS}
    picks["coreset"], picks["badge"] = coreset(Z, known, BUDGET), badge(Z, known, y[known], BUDGET, seed)
    return {f"round2_{k}": score(first + [names[i] for i in v], names, X, y, seed) for k, v in picks.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    rows = []
    with scratch_folder("graft-bench-select-") as scratch:
        pool = scratch / "pool"
        truth = flat_pool(pool)
        names = sorted(truth)
        features = FeatureExtractor().fit().extract([pool / n for n in names])
        X, y = features.vectors, np.array([truth[Path(p).name] for p in features.paths])
        names = [Path(p).name for p in features.paths]
        for seed in (int(s) for s in args.seeds.split(",")):
            row = one_seed(scratch, pool, names, X, y, truth, seed)
            rows.append(row)
            print(" ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items()), flush=True)
    keys = [k for k in rows[0] if k != "seed"]
    mean = {k: float(np.mean([r[k] for r in rows])) for k in keys}
    print("mean of", len(rows), " ".join(f"{k} {v:.4f}" for k, v in mean.items()))
    print(f"round 1: graft {mean['round1_graft'] - mean['round1_random']:+.4f} over random (bar +0.10); round 2: "
          f"typical-uncertain {mean['round2_typical-uncertain'] - mean['round2_random']:+.4f}, "
          f"typical {mean['round2_typical'] - mean['round2_random']:+.4f}, uncertain "
          f"{mean['round2_uncertain'] - mean['round2_random']:+.4f} over random (bar +0.05)")
    print("literature, round 2 over random:", " ".join(f"{k[7:]} {v - mean['round2_random']:+.4f}"
                                                      for k, v in mean.items() if k.startswith("round2_")))
    save_rows(rows, args.json)


if __name__ == "__main__":
    main()
