"""Multi-task (issue #8): flowers17 and hymenoptera in one network vs each alone, same plan,
image size, batch size and augmentation; per-task validation accuracy and wall time.

    python bench/bench_multitask.py            # about 15-20 minutes on 2 cores

Alone: `graft finetune` (its head stage trains on cached plain features, as a user gets it).
Together: `graft multitask flowers=... insects=...` (every step a batch of each task; the
smaller task cycled). flowers17: 25 % stratified split, seed 0; hymenoptera: its val folder.
"""
from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

from common import save_rows, scratch_folder

DATASETS = Path(__file__).resolve().parents[2] / "shared" / "datasets"
FLOWERS = DATASETS / "flowers17"
INSECTS, INSECTS_VAL = DATASETS / "hymenoptera" / "train", DATASETS / "hymenoptera" / "val"


def main() -> None:
    from graft.recipes.finetune import finetune
    from graft.recipes.multitask import multitask

    parser = argparse.ArgumentParser()
    parser.add_argument("--stages", default="head:3,top2:3")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    common = {"stages": args.stages, "image_size": args.image_size, "batch_size": 32, "seed": 0, "progress": False}
    rows = {}
    with scratch_folder("bench-multitask-") as scratch:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for name, data, val in (("flowers", FLOWERS, None), ("insects", INSECTS, INSECTS_VAL)):
                started = time.perf_counter()
                result = finetune(data, scratch / name, val_dir=val, val_fraction=None if val else 0.25, **common)
                rows[f"{name} alone"] = {"accuracy": {name: result.metrics["accuracy"]},
                                         "seconds": round(time.perf_counter() - started, 1)}
                print(f"{name} alone: {result.metrics['accuracy']:.4f}  {rows[f'{name} alone']['seconds']} s",
                      flush=True)
            for weighting in ("fixed", "uncertainty"):
                started = time.perf_counter()
                result = multitask({"flowers": str(FLOWERS), "insects": str(INSECTS)}, scratch / f"mt-{weighting}",
                                   val_dirs={"insects": str(INSECTS_VAL)}, val_fraction=0.25, weighting=weighting,
                                   **common)
                accuracy = {task: m["accuracy"] for task, m in result.metrics["tasks"].items()}
                rows[f"together ({weighting})"] = {"accuracy": accuracy,
                                                   "seconds": round(time.perf_counter() - started, 1)}
                print(f"together ({weighting}): " + "  ".join(f"{t} {a:.4f}" for t, a in accuracy.items())
                      + f"  {rows[f'together ({weighting})']['seconds']} s", flush=True)
        alone = rows["flowers alone"]["seconds"] + rows["insects alone"]["seconds"]
        print(f"wall: both alone {alone:.1f} s; together (fixed) {rows['together (fixed)']['seconds']:.1f} s "
              f"= {rows['together (fixed)']['seconds'] / alone:.2f}x")
        save_rows(rows, args.json)


if __name__ == "__main__":
    main()
