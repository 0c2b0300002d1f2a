"""Domain adaptation on digits (issues #8, #18): `mnist-2000` (labelled source) -> an unlabelled
target, scored on its test set: source-only (`--adversary none`) against DANN and CDAN with
the same settings, over several seeds, with the proxy A-distance between source and target
features before and after each run, and the wall time.

    python bench/bench_adapt.py --target mnistm --adversaries none,dann,cdan   # the gap case
    python bench/bench_adapt.py --target usps --adversaries none,dann          # the small-gap case
    python bench/bench_adapt.py --target mnistm --seeds 0 --stages all:12      # one seed, another plan

Settings not given on the command line are `graft adapt`'s defaults.
"""
from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path

import numpy as np

from common import save_rows, scratch_folder

DIGITS = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "digits"
TARGETS = {"mnistm": ("mnistm-2000", "mnistm-test"), "usps": ("usps-1800", "usps-test")}
# settings passed to adapt() only when given (None: graft adapt's default)
OPTIONAL = {"backbone": str, "image_size": int, "stages": str, "lr": float, "batch_size": int, "augment": str,
            "adversary_weight": float, "discriminator_width": int, "head": str, "optimizer": str,
            "weight_decay": float}


def run_one(target: str, adversary: str, seed: int, settings: dict, scratch: Path) -> dict:
    from graft.recipes.adapt import adapt

    unlabelled, test = TARGETS[target]
    run = scratch / f"{target}-{adversary}-{seed}"
    started = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = adapt(DIGITS / "mnist-2000", run, target_dir=DIGITS / unlabelled, target_val_dir=DIGITS / test,
                       adversary=adversary, seed=seed, val_fraction=0.2, progress=False, **settings)
    domain = json.loads((run / "domain.json").read_text())
    return {"target": target, "adversary": adversary, "seed": seed, "mnist_val": result.metrics["accuracy"],
            "target_test": result.metrics["target"]["accuracy"], **domain,
            "seconds": round(time.perf_counter() - started, 1)}


def summary(rows: list[dict], adversaries: list[str]) -> None:
    """Mean +- std per adversary, and each adversary's gain over source-only."""
    means = {}
    for adversary in adversaries:
        mine = [row for row in rows if row["adversary"] == adversary]
        scores = [row["target_test"] for row in mine]
        means[adversary] = np.mean(scores)
        before = np.mean([row["proxy_a_distance_before"] for row in mine])
        after = np.mean([row["proxy_a_distance_after"] for row in mine])
        gain = f"  {100 * (means[adversary] - means['none']):+.1f} points over none" \
            if "none" in means and adversary != "none" else ""
        print(f"{adversary:6s} {mine[0]['target']}-test {np.mean(scores):.4f} +- {np.std(scores):.4f} over "
              f"{len(scores)} seeds; proxy A-distance {before:.3f} -> {after:.3f}; "
              f"{np.mean([row['seconds'] for row in mine]):.0f} s per run{gain}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--target", default="mnistm", choices=sorted(TARGETS))
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--adversaries", default="none,dann,cdan")
    for name, kind in OPTIONAL.items():
        parser.add_argument("--" + name.replace("_", "-"), type=kind, default=None)
    parser.add_argument("--from-scratch", action="store_true", help="random initial weights for --backbone")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    settings = {name: getattr(args, name) for name in OPTIONAL if getattr(args, name) is not None}
    if args.from_scratch:
        settings["pretrained"] = False
    adversaries = args.adversaries.split(",")
    rows = []
    with scratch_folder("bench-adapt-") as scratch:
        for adversary in adversaries:
            for seed in (int(s) for s in args.seeds.split(",")):
                rows.append(run_one(args.target, adversary, seed, settings, scratch))
                print(json.dumps(rows[-1]), flush=True)
    summary(rows, adversaries)
    save_rows(rows, args.json)


if __name__ == "__main__":
    main()
