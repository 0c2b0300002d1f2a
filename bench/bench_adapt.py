"""Domain adaptation on digits (issue #8): `mnist-2000` -> `usps-1800` (target labels never
used), scored on `usps-test`: source-only vs DANN (and CDAN) over several seeds, with the
proxy A-distance between source and target features before and after each run.

    python bench/bench_adapt.py                                    # resnet10t from scratch, 32 px
    python bench/bench_adapt.py --seeds 0 --adversaries none,dann  # one seed
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


def main() -> None:
    from graft.recipes.adapt import adapt

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--adversaries", default="none,dann")
    parser.add_argument("--backbone", default="resnet10t")
    parser.add_argument("--pretrained", action="store_true", help="ImageNet weights instead of random ones")
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--stages", default="all:12")
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--adversary-weight", type=float, default=1.0)
    parser.add_argument("--head", default="linear")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    rows = {}
    with scratch_folder("bench-adapt-") as scratch:
        for adversary in args.adversaries.split(","):
            for seed in (int(s) for s in args.seeds.split(",")):
                run = scratch / f"{adversary}-{seed}"
                started = time.perf_counter()
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    result = adapt(DIGITS / "mnist-2000", DIGITS / "usps-1800", run,
                                   target_val_dir=DIGITS / "usps-test",
                                   adversary=adversary, adversary_weight=args.adversary_weight, stages=args.stages,
                                   lr=args.lr, backbone=args.backbone, pretrained=args.pretrained,
                                   image_size=args.image_size, batch_size=args.batch_size, head=args.head, seed=seed,
                                   val_fraction=0.2, progress=False)
                domain = json.loads((run / "domain.json").read_text())
                row = {"adversary": adversary, "seed": seed, "mnist_val": result.metrics["accuracy"],
                       "usps_test": result.metrics["target"]["accuracy"], **domain,
                       "seconds": round(time.perf_counter() - started, 1)}
                rows[f"{adversary}-{seed}"] = row
                print(json.dumps(row), flush=True)
        for adversary in args.adversaries.split(","):
            scores = [row["usps_test"] for row in rows.values() if row["adversary"] == adversary]
            print(f"{adversary:6s} usps-test {np.mean(scores):.4f} +- {np.std(scores):.4f} over {len(scores)} seeds")
        save_rows(rows, args.json)


if __name__ == "__main__":
    main()
