"""Does the advisor choose well? On 8 cases (hymenoptera, flowers17, mnist-2000, usps-1800, and
a 10-per-class training subset of each, scored on the same validation images), run every
candidate strategy for real and put the validation accuracies beside the advisor's choice and
its LogME ranking. Bar (issue #7): the choice is the best or within 1 point of it in >= 6 of 8.

    python bench/bench_advisor.py                 # about 20-30 minutes on 2 cores
    python bench/bench_advisor.py --cases hymenoptera,hymenoptera-10

Candidates, each with lite0 at the advisor's input size (224 px for photos, 64 px for digits):
frozen last layer + logreg; frozen blocks.5 + rbf-svm; fine-tune top (head:10,top2:3);
fine-tune all (head:10,all:3). The advisor ranks lite0's last layer against blocks.5 and
blocks.4. Also printed: Spearman's rank correlation between LogME and frozen accuracy over the
three frozen cuts (last, blocks.5, blocks.4, each with logreg).
"""
from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

import numpy as np

from common import save_rows, scratch_folder

DATASETS = Path(__file__).resolve().parents[2] / "shared" / "datasets"
BACKBONE = "tf_efficientnet_lite0"
INNER = ["blocks.5", "blocks.4"]
PLANS = {"finetune-top": "head:10,top2:3", "finetune-all": "head:10,all:3"}


def cases(scratch: Path) -> dict[str, dict]:
    """name -> {train, val_dir or val_fraction}; subsets hold 10 images per class of the
    training split (a split's validation images are kept out of its subset)."""
    from graft.data.folders import load_train_val

    full = {
        "hymenoptera": {"train": DATASETS / "hymenoptera" / "train", "val_dir": DATASETS / "hymenoptera" / "val"},
        "flowers17": {"train": DATASETS / "flowers17", "val_fraction": 0.25},
        "mnist-2000": {"train": DATASETS / "digits" / "mnist-2000", "val_fraction": 0.25},
        "usps-1800": {"train": DATASETS / "digits" / "usps-1800", "val_fraction": 0.25},
    }
    out = dict(full)
    for name, case in full.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            train, val = load_train_val(case["train"], val_dir=case.get("val_dir"),
                                        val_fraction=case.get("val_fraction"), seed=0)
        root = scratch / f"{name}-10"
        for split, folder, per_class in (("train", train, 10), ("val", val, None)):
            taken: dict[int, int] = {}
            for record in folder.records:
                if per_class is not None and taken.get(record.label, 0) >= per_class:
                    continue
                taken[record.label] = taken.get(record.label, 0) + 1
                link = root / split / folder.classes[record.label] / record.path.name
                link.parent.mkdir(parents=True, exist_ok=True)
                link.symlink_to(record.path)
        out[f"{name}-10"] = {"train": root / "train", "val_dir": root / "val"}
    return out


def spearman(a, b) -> float:
    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    return float(np.corrcoef(ra, rb)[0, 1]) if len(a) > 1 and np.std(ra) and np.std(rb) else float("nan")


def run_case(name: str, case: dict, scratch: Path) -> dict:
    from graft.recipes.advise import advise
    from graft.recipes.finetune import finetune
    from graft.recipes.frozen import fit_frozen

    split = {"val_dir": case.get("val_dir"), "val_fraction": case.get("val_fraction")}
    start = time.perf_counter()
    advice = advise(case["train"], backbones=[BACKBONE], layers=INNER, progress=False, **split)
    size = advice.image_size
    row = {"case": name, "advice": advice.strategy, "quadrant": advice.quadrant, "layer_gap": advice.layer_gap,
           "leep": advice.leep, "image_size": size or 224, "advice_seconds": advice.seconds,
           "logme": {str(c.layer or "last"): c.logme for c in advice.candidates}, "accuracy": {}, "seconds": {}}

    def timed(strategy, fn):
        began = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = fn(scratch / f"{name}-{strategy}")
        row["accuracy"][strategy] = result.metrics["accuracy"]
        row["seconds"][strategy] = round(time.perf_counter() - began, 1)

    timed("frozen-last", lambda out: fit_frozen(case["train"], out, image_size=size, progress=False, **split))
    timed("frozen-inner", lambda out: fit_frozen(case["train"], out, layer="blocks.5", head="rbf-svm",
                                                 image_size=size, progress=False, **split))
    for strategy, plan in PLANS.items():
        timed(strategy, lambda out, plan=plan: finetune(case["train"], out, stages=plan, image_size=size,
                                                         progress=False, **split))
    frozen = {"last": row["accuracy"]["frozen-last"]}
    for layer in INNER:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            frozen[layer] = fit_frozen(case["train"], scratch / f"{name}-logreg-{layer}", layer=layer,
                                       image_size=size, progress=False, **split).metrics["accuracy"]
    row["frozen_logreg"] = frozen
    cuts = list(frozen)
    row["spearman_logme_frozen"] = spearman([row["logme"][c] for c in cuts], [frozen[c] for c in cuts])
    best = max(row["accuracy"].values())
    row["best"] = [s for s, a in row["accuracy"].items() if a == best]
    row["advice_accuracy"] = row["accuracy"][advice.strategy]
    row["within_1_point"] = best - row["advice_accuracy"] <= 0.01 + 1e-9
    row["case_seconds"] = round(time.perf_counter() - start, 1)
    return row


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cases", default=None, help="comma-separated subset of the 8 cases")
    parser.add_argument("--json", default=None, help="also write the rows to this file")
    args = parser.parse_args()
    with scratch_folder("bench-advisor-") as scratch:
        chosen = cases(scratch)
        if args.cases:
            chosen = {k: v for k, v in chosen.items() if k in args.cases.split(",")}
        rows = []
        for name, case in chosen.items():
            row = run_case(name, case, scratch)
            rows.append(row)
            accuracies = "  ".join(f"{s} {a:.4f}" for s, a in row["accuracy"].items())
            print(f"{name:16s} {row['quadrant']:18s} advice {row['advice']:13s} {accuracies}  "
                  f"{'OK' if row['within_1_point'] else 'MISS'}  spearman {row['spearman_logme_frozen']:.2f}  "
                  f"({row['case_seconds']:.0f} s)", flush=True)
        hits = sum(r["within_1_point"] for r in rows)
        print(f"advice best or within 1 point in {hits} of {len(rows)} cases")
        save_rows(rows, args.json)


if __name__ == "__main__":
    main()
