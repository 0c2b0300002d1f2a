"""Multi-task at single-task speed (issues #8, #18): flowers17 and hymenoptera in one network vs
each alone with `graft finetune`, same plan, image size, batch size and augmentation; per-task
validation accuracy, wall time, and the ratio of the multi-task run's wall time to the two
single runs' together (the bar: at most 1.3x, each task within 0.5 points of its single run).

    python bench/bench_multitask.py                       # 224 px: a few minutes on a quiet 2-core machine
    python bench/bench_multitask.py --sampling proportional,together --weighting fixed,uncertainty
    python bench/bench_multitask.py --alone mt.json --frozen-statistics on,off   # single runs from an earlier --json

Alone: `graft finetune` (head stages on cached plain features, frozen layers of augmented
stages in ONNX Runtime). Together: `graft multitask flowers=... insects=...`, which now takes
the same paths. Each arm starts from its own empty feature cache (GRAFT_CACHE_DIR), so every
arm pays its own feature extraction and ONNX export. flowers17: 25 % stratified split, seed 0;
hymenoptera: its val folder.
"""
from __future__ import annotations

import argparse
import json
import os
import time
import warnings
from pathlib import Path

from common import save_rows, scratch_folder

DATASETS = Path(__file__).resolve().parents[2] / "shared" / "datasets"
FLOWERS = DATASETS / "flowers17"
INSECTS, INSECTS_VAL = DATASETS / "hymenoptera" / "train", DATASETS / "hymenoptera" / "val"


def timed(function, cache: Path):
    """(result, seconds) of ``function()`` run against an empty feature cache at ``cache``."""
    os.environ["GRAFT_CACHE_DIR"] = str(cache)
    started = time.perf_counter()
    result = function()
    return result, round(time.perf_counter() - started, 1)


def per_epoch(history: Path) -> str:
    """Each epoch's validation accuracy per task (the run keeps the epoch with the best mean)."""
    rows = [json.loads(line) for line in history.read_text().splitlines() if line.strip()]
    return "\n".join(f"  epoch {r.get('epoch')}: " + "  ".join(f"{k.removesuffix('_val_accuracy')} {v:.4f}"
                                                             for k, v in r.items() if k.endswith("val_accuracy"))
                     for r in rows)


def main() -> None:
    from graft.recipes.finetune import finetune
    from graft.recipes.multitask import multitask

    parser = argparse.ArgumentParser()
    parser.add_argument("--stages", default="head:3,top2:3")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--sampling", default="proportional", help="comma list: proportional, together")
    parser.add_argument("--weighting", default="fixed", help="comma list: fixed, uncertainty")
    parser.add_argument("--frozen-statistics", default="on", help="comma list: on (the default: BatchNorm "
                                                                  "statistics frozen), off (--train-statistics)")
    parser.add_argument("--task-weights", default="", help="TASK=W,... fixed loss weights (default 1 each)")
    parser.add_argument("--alone", default=None, help="an earlier run's --json: take the single runs from it "
                                                      "(same plan and image size) instead of running them")
    parser.add_argument("--seed", type=int, default=0, help="the flowers17 split's and every run's seed")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    common = {"stages": args.stages, "image_size": args.image_size, "batch_size": 32, "seed": args.seed,
              "progress": False}
    rows = {}
    with scratch_folder("bench-multitask-") as scratch, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        earlier = json.loads(Path(args.alone).read_text()) if args.alone else {}
        for name, data, val in (("flowers", FLOWERS, None), ("insects", INSECTS, INSECTS_VAL)):
            if f"{name} alone" in earlier:
                rows[f"{name} alone"] = earlier[f"{name} alone"]
                print(f"{name} alone (from {args.alone}): {rows[f'{name} alone']['accuracy'][name]:.4f}  "
                      f"{rows[f'{name} alone']['seconds']} s", flush=True)
                continue
            result, seconds = timed(lambda: finetune(data, scratch / name, val_dir=val,
                                                     val_fraction=None if val else 0.25, **common),
                                    scratch / "cache-alone")
            rows[f"{name} alone"] = {"accuracy": {name: result.metrics["accuracy"]}, "seconds": seconds}
            print(per_epoch(scratch / name / "history.jsonl"), flush=True)
            print(f"{name} alone: {result.metrics['accuracy']:.4f}  {seconds} s", flush=True)
        alone = {name: rows[f"{name} alone"]["accuracy"][name] for name in ("flowers", "insects")}
        alone_seconds = rows["flowers alone"]["seconds"] + rows["insects alone"]["seconds"]
        task_weights = dict(pair.split("=") for pair in args.task_weights.split(",") if pair)
        variants = [(sampling, weighting, frozen) for sampling in args.sampling.split(",")
                    for weighting in args.weighting.split(",") for frozen in args.frozen_statistics.split(",")]
        for sampling, weighting, frozen in variants:
            label = f"together ({sampling}, {weighting}{', BN frozen' if frozen == 'on' else ''}" \
                    f"{''.join(f', {t}={w}' for t, w in task_weights.items())})"
            result, seconds = timed(lambda: multitask(
                {"flowers": str(FLOWERS), "insects": str(INSECTS)}, scratch / label.replace(" ", ""),
                val_dirs={"insects": str(INSECTS_VAL)}, val_fraction=0.25, weighting=weighting,
                task_sampling=sampling, train_statistics=frozen == "off", task_weights=task_weights, **common),
                scratch / f"cache-{sampling}-{weighting}-{frozen}")
            accuracy = {task: m["accuracy"] for task, m in result.metrics["tasks"].items()}
            print(per_epoch(scratch / label.replace(" ", "") / "history.jsonl"), flush=True)
            rows[label] = {"accuracy": accuracy, "seconds": seconds, "ratio": round(seconds / alone_seconds, 3),
                           "points_vs_alone": {t: round(100 * (a - alone[t]), 2) for t, a in accuracy.items()}}
            print(f"{label}: " + "  ".join(f"{t} {a:.4f} ({100 * (a - alone[t]):+.2f} pt)"
                                           for t, a in accuracy.items())
                  + f"  {seconds} s = {seconds / alone_seconds:.2f}x both alone ({alone_seconds:.1f} s)",
                  flush=True)
        save_rows(rows, args.json)


if __name__ == "__main__":
    main()
