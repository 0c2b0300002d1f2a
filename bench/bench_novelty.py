"""Novelty scores on a trained model (issue 19): AUROC of each score, flag rates at the threshold.

    python bench/bench_novelty.py --run RUN --val DIR --near DIR [--far DIR] [--n 50]

In-distribution: the run's validation images (--val). Unfamiliar sets: flat grey squares and
uniform noise (made here, 10 each), --n images drawn from --near (e.g. flowers17 for an
ants/bees model: many hymenoptera photos show flowers) and from --far (e.g. MNIST digits).
Scores, all from the run's model.onnx outputs (pooled features, logits) and its stored
statistics (model/novelty.safetensors, needed: train the run with this graft):

* knn: cosine distance to the 10th nearest training feature (Sun et al. 2022);
* head-msp: 1 - maximum softmax probability of the model's own head (Hendrycks & Gimpel 2017);
* head-energy: -logsumexp of the model's logits (Liu et al. 2020);
* doubt: 1 - maximum softmax probability of graft's weakly regularised novelty classifier;
* graft: Fisher's combination of knn and doubt p-values (what graft ships).

For each: AUROC of validation vs each set (1.0 = perfectly separated), and the share of each set
flagged at a threshold that flags at most 5 % of validation (graft's own threshold for graft).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import save_rows, scratch_folder  # noqa: E402


def auroc(inside: np.ndarray, outside: np.ndarray) -> float:
    """P(score of an outside image > score of an inside one), ties counted half (Mann-Whitney)."""
    greater = (outside[:, None] > inside[None, :]).mean()
    ties = (outside[:, None] == inside[None, :]).mean()
    return float(greater + ties / 2)


def synthetic(folder: Path) -> dict[str, list[Path]]:
    rng = np.random.default_rng(0)
    sets = {"grey": [], "noise": []}
    for i in range(10):
        level = int(40 + 20 * i)
        Image.new("RGB", (400, 300), (level, level, level)).save(folder / f"grey{i}.png")
        sets["grey"].append(folder / f"grey{i}.png")
        Image.fromarray(rng.integers(0, 256, (300, 400, 3), dtype=np.uint8)).save(folder / f"noise{i}.png")
        sets["noise"].append(folder / f"noise{i}.png")
    return sets


def sample(root: str, n: int, seed: int = 0) -> list[Path]:
    files = sorted(p for p in Path(root).rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    return [files[i] for i in np.random.default_rng(seed).permutation(len(files))[:n]]


def outputs(predictor, paths):
    """(features, logits) of each image, from the ONNX model."""
    rows = np.stack([predictor.decode(p) for p in paths])
    logits, _, features = predictor.outputs(rows)
    return features, logits


def scores(stats, features, logits) -> dict[str, np.ndarray]:
    from graft.artifacts.novelty import energy_score

    z = logits - logits.max(1, keepdims=True)
    softmax = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    return {"knn": stats.distance(features), "head-msp": 1 - softmax.max(1),
            "head-energy": energy_score(logits, stats.slices), "doubt": stats.doubt_of(features, logits),
            "graft": stats.score(features, logits)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", required=True)
    parser.add_argument("--val", required=True, help="The run's validation folder (in-distribution).")
    parser.add_argument("--near", required=True, help="Near but unfamiliar images (e.g. flowers17).")
    parser.add_argument("--far", default=None, help="Far-off images (e.g. MNIST digits).")
    parser.add_argument("--n", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0, help="Which --n images are drawn.")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()

    from graft.inference import Predictor

    predictor = Predictor.load(args.run)
    stats = predictor.novelty
    if stats is None:
        raise SystemExit(f"{args.run} has no novelty statistics: train it again with this graft")
    with scratch_folder("graft-novelty-") as folder:
        sets = synthetic(folder)
        sets["near"] = sample(args.near, args.n, args.seed)
        if args.far:
            sets["far"] = sample(args.far, args.n, args.seed)
        val = sorted(p for p in Path(args.val).rglob("*") if p.is_file())
        inside = scores(stats, *outputs(predictor, val))
        outside = {name: scores(stats, *outputs(predictor, paths)) for name, paths in sets.items()}
    rows = []
    for score, reference in inside.items():
        if score == "graft":
            threshold = stats.threshold
        else:  # the same rule as graft's: at most 5 % of validation above it
            ordered = np.sort(reference)
            threshold = ordered[len(ordered) - int(np.floor(0.05 * len(ordered) + 1e-9)) - 1]
        row = {"score": score, "val_flagged": round(float((reference > threshold).mean()), 3)}
        if score == "graft":  # what the model states for new in-domain images (issue 30, item 20)
            row["stated_flag_rate"] = round(getattr(stats, "flag_rate", 0.05), 4)
        for name, values in outside.items():
            row[f"{name}_auroc"] = round(auroc(reference, values[score]), 3)
            row[f"{name}_flagged"] = round(float((values[score] > threshold).mean()), 3)
        rows.append(row)
        print(json.dumps(row))
    save_rows(rows, args.json)


if __name__ == "__main__":
    main()
