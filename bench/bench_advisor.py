"""Does `graft auto` choose well, and is it never worse than `graft fit` as is? On 12 cases,
every candidate plan of the advice is run for real and its validation accuracy put beside
auto's final one. Bars (issue #21): auto within 1 point of the best candidate in >= 10 of 12,
never more than 0.5 points below `graft fit` with its defaults; the advice on a cold cache for
flowers17 in under a minute; auto's whole time estimate (said before its checks) against the time taken.

    python bench/bench_advisor.py --json advisor.json           # all 12 cases
    python bench/bench_advisor.py --cases hymenoptera,hymenoptera-10

Cases: hymenoptera (its val folder), flowers17, mnist-2000, usps-1800 and mnistm-2000 (a
stratified 25 % split, seed 0); a 10-per-class training subset of the first four and a 5-per-
class subset of hymenoptera and flowers17, scored on the same validation images; Fashion-MNIST
(Debian's dataset-fashion-mnist: the first 100 per class of its training file, the first 100
per class of its test file as validation; skipped when the package is absent).
The advice ranks lite0 only (its last layer, blocks.5 and blocks.4, at 224 px and, for small
images, at twice their size). Candidates: every plan the advice builds: `defaults` (graft fit
as is: lite0, last layer, logreg, 224 px), `frozen-last` (the best other last-layer measurement),
`frozen-inner` (the best inner one + RBF SVM), `finetune-top` (head:10,top2:3) and `finetune-all`
(head:10,all:3); plans auto checked are not run twice (same calls, same seeds). A fresh feature
cache is used, so each full case's advice is cold; subsets reuse their full case's features.
"""
from __future__ import annotations

import argparse
import gzip
import os
import time
import warnings
from pathlib import Path

import numpy as np

from common import save_rows, scratch_folder

DATASETS = Path(__file__).resolve().parents[2] / "shared" / "datasets"
FASHION = Path("/usr/share/datasets/fashion-mnist")
FASHION_CLASSES = ["tshirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "boot"]
BACKBONE = "tf_efficientnet_lite0"
INNER = ["blocks.5", "blocks.4"]
SUBSETS = {"hymenoptera": (10, 5), "flowers17": (10, 5), "mnist-2000": (10,), "usps-1800": (10,)}


def _link_subset(name: str, case: dict, per_class: int, scratch: Path) -> dict:
    from graft.data.folders import load_train_val

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        train, val = load_train_val(case["train"], val_dir=case.get("val_dir"), val_fraction=case.get("val_fraction"),
                                    seed=0)
    root = scratch / f"{name}-{per_class}"
    for split, folder, most in (("train", train, per_class), ("val", val, None)):
        taken: dict[int, int] = {}
        for record in folder.records:
            if most is not None and taken.get(record.label, 0) >= most:
                continue
            taken[record.label] = taken.get(record.label, 0) + 1
            link = root / split / folder.classes[record.label] / record.path.name
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(record.path)
    return {"train": root / "train", "val_dir": root / "val"}


def _idx(path: Path) -> np.ndarray:
    with gzip.open(path) as handle:
        data = handle.read()
    dims = data[3]
    shape = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(data, np.uint8, offset=4 + 4 * dims).reshape(shape)


def _fashion(scratch: Path, per_class: int = 100) -> dict | None:
    from PIL import Image

    if not FASHION.is_dir():
        return None
    root = scratch / "fashion"
    for split, prefix in (("train", "train"), ("val", "t10k")):
        images = _idx(FASHION / f"{prefix}-images-idx3-ubyte.gz")
        labels = _idx(FASHION / f"{prefix}-labels-idx1-ubyte.gz")
        for label, name in enumerate(FASHION_CLASSES):
            (root / split / name).mkdir(parents=True, exist_ok=True)
            for k in np.flatnonzero(labels == label)[:per_class]:
                Image.fromarray(images[k]).save(root / split / name / f"{k:05d}.png")
    return {"train": root / "train", "val_dir": root / "val"}


def cases(scratch: Path) -> dict[str, dict]:
    """name -> {train, val_dir or val_fraction}; subsets keep their full case's validation images."""
    full = {
        "hymenoptera": {"train": DATASETS / "hymenoptera" / "train", "val_dir": DATASETS / "hymenoptera" / "val"},
        "flowers17": {"train": DATASETS / "flowers17", "val_fraction": 0.25},
        "mnist-2000": {"train": DATASETS / "digits" / "mnist-2000", "val_fraction": 0.25},
        "usps-1800": {"train": DATASETS / "digits" / "usps-1800", "val_fraction": 0.25},
        "mnistm-2000": {"train": DATASETS / "digits" / "mnistm-2000", "val_fraction": 0.25},
    }
    out = dict(full)
    fashion = _fashion(scratch)
    if fashion:
        out["fashion-100"] = fashion
    for name, sizes in SUBSETS.items():
        for per_class in sizes:
            out[f"{name}-{per_class}"] = _link_subset(name, full[name], per_class, scratch)
    return out


def run_case(name: str, case: dict, scratch: Path, budget: float, skip: list[str]) -> dict:
    from graft.recipes.auto import auto
    from graft.recipes.finetune import finetune
    from graft.recipes.frozen import fit_frozen

    split = {"val_dir": case.get("val_dir"), "val_fraction": case.get("val_fraction"), "seed": 0}
    said: list[str] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = auto(case["train"], scratch / f"{name}-auto", backbones=[BACKBONE], layers=INNER, budget=budget,
                      progress=False, say=said.append, **split)
    advice = result.advice
    accuracy = {c.name: c.accuracy for c in result.checks}
    seconds = {c.name: c.seconds for c in result.checks}
    for plan in advice.plans:  # the plans auto did not check, run here the same way
        if plan.name in accuracy or plan.name in skip:
            continue
        began = time.perf_counter()
        run = fit_frozen if plan.frozen else finetune
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            metrics = run(case["train"], scratch / f"{name}-{plan.name}", progress=False, **split,
                          **plan.settings()).metrics
        accuracy[plan.name], seconds[plan.name] = metrics["accuracy"], round(time.perf_counter() - began, 1)
    best = max(accuracy.values())
    final = result.metrics["accuracy"]
    return {"case": name, "quadrant": advice.quadrant, "driver": advice.driver, "resolution": advice.resolution,
            "layer_gap": advice.layer_gap, "leep_gain": advice.leep_gain, "upscale_gain": advice.upscale_gain,
            "sure": advice.sure, "advice": advice.strategy, "checked": [c.name for c in result.checks],
            "chosen": result.chosen, "final": final, "accuracy": accuracy, "seconds": seconds,
            "plans": {p.name: p.describe() for p in advice.plans},
            "best": [n for n, a in accuracy.items() if a == best], "behind_best": round(100 * (best - final), 2),
            "behind_defaults": round(100 * (accuracy["defaults"] - final), 2),
            "within_1_point": best - final <= 0.01 + 1e-9, "not_below_defaults": accuracy["defaults"] - final <= 0.005,
            "advice_seconds": advice.seconds, "auto_estimated_seconds": result.estimated_seconds,
            "auto_seconds": result.seconds}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cases", default=None, help="comma-separated subset of the cases")
    parser.add_argument("--budget", type=float, default=10.0, help="auto's --budget in minutes")
    parser.add_argument("--skip", default=None, help="plans not to run unless auto checks them (e.g. finetune-all)")
    parser.add_argument("--json", default=None, help="also write the rows to this file (after every case)")
    args = parser.parse_args()
    with scratch_folder("bench-advisor-") as scratch:
        os.environ["GRAFT_CACHE_DIR"] = str(scratch / "cache")  # cold: each full case's advice extracts anew
        chosen = cases(scratch)
        if args.cases:
            chosen = {k: chosen[k] for k in args.cases.split(",") if k in chosen}  # in the order given
        rows = []
        for name, case in chosen.items():
            row = run_case(name, case, scratch, args.budget, (args.skip or "").split(","))
            rows.append(row)
            save_rows(rows, args.json)
            accuracies = "  ".join(f"{s} {a:.4f}" for s, a in row["accuracy"].items())
            print(f"{name:15s} {row['quadrant']:18s} checked {','.join(row['checked'])} -> {row['chosen']} "
                  f"{row['final']:.4f} | {accuracies} | behind best {row['behind_best']:.1f} pts, behind defaults "
                  f"{row['behind_defaults']:.1f} | advice {row['advice_seconds']:.0f} s, "
                  f"auto {row['auto_seconds']:.0f} s "
                  f"(estimated {row['auto_estimated_seconds']:.0f} s)", flush=True)
        hits = sum(r["within_1_point"] for r in rows)
        safe = sum(r["not_below_defaults"] for r in rows)
        print(f"auto within 1 point of the best candidate in {hits} of {len(rows)} cases (bar: 10 of 12); "
              f"not more than 0.5 points below graft fit's defaults in {safe} of {len(rows)} (bar: all)")
        flowers = [r for r in rows if r["case"] == "flowers17"]
        if flowers:
            print(f"flowers17 advice on a cold cache: {flowers[0]['advice_seconds']:.1f} s (bar: under 60 s)")


if __name__ == "__main__":
    main()
