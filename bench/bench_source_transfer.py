"""Your own source model (issue #9): pretrain on MNIST, transfer to USPS.

1. `graft pretrain` a small network (resnet10t, 32 px, from random weights) on
   digits/mnist-2000 (20 % held out for choosing the epoch).
2. For 10, 50 and all labels per class of digits/usps-1800, scored on digits/usps-test:
   frozen features of the MNIST run (`graft fit --backbone RUN --shots K`), the MNIST run
   fine-tuned (`graft finetune --backbone RUN`), and the same architecture from scratch
   (`graft pretrain`), with the same plan and budget. Fine-tuned and from-scratch runs choose
   their epoch on 20 % of the K labels and are scored once on usps-test (`--test`).
3. Layer transfer: first:K layers copied from the MNIST run (then all trained), 50 labels per
   class, for a few K: accuracy against K.

    python bench/bench_source_transfer.py            # about 10-20 minutes on 2 cores
"""
from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path

from common import save_rows, scratch_folder

DIGITS = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "digits"
ARCH, SIZE, PLAN, LR = "resnet10t", 32, "all:12", 2e-3


def subset(root: Path, per_class: int | None, into: Path) -> Path:
    """A class-folder tree of symlinks to ``per_class`` images of each class (seed 0)."""
    from graft.data.folders import scan_folder, take_per_class

    folder = scan_folder(root)
    chosen = take_per_class(folder, per_class, seed=0) if per_class else folder
    target = into / f"{root.name}-{per_class or 'all'}"
    for record in chosen.records:
        link = target / chosen.classes[record.label] / record.path.name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(record.path)
    return target


def train(data: Path, out: Path, **options) -> dict:
    from graft.recipes.finetune import finetune

    started = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = finetune(data, out, val_fraction=0.2, stages=PLAN, lr=LR, base_lr_factor=1.0, image_size=SIZE,
                          batch_size=32, augment="none", test_dir=DIGITS / "usps-test", progress=False, **options)
    return {"test": result.metrics["test"]["accuracy"], "val": result.metrics["accuracy"],
            "seconds": round(time.perf_counter() - started, 1)}


def main() -> None:
    from graft.recipes.frozen import fit_frozen

    parser = argparse.ArgumentParser()
    parser.add_argument("--labels", default="10,50,all")
    parser.add_argument("--first", default="0,7,11,12,13,14",
                        help="first:K layer transfers to try (resnet10t: 7 = the stem, 11..14 = + layer1..layer4)")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    rows = {"pretrain": {}, "labels": {}, "first_k": {}}
    with scratch_folder("bench-source-") as scratch:
        source = scratch / "mnist-run"
        rows["pretrain"] = train(DIGITS / "mnist-2000", source, backbone=ARCH, pretrained=False, command="pretrain")
        rows["pretrain"]["mnist_val"] = rows["pretrain"].pop("val")
        rows["pretrain"]["usps_test_without_transfer"] = rows["pretrain"].pop("test")
        print(f"pretrained {ARCH} on mnist-2000: {json.dumps(rows['pretrain'])}", flush=True)
        for labels in args.labels.split(","):
            per_class = None if labels == "all" else int(labels)
            data = subset(DIGITS / "usps-1800", per_class, scratch)
            started = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                frozen = fit_frozen(data, scratch / f"frozen-{labels}", val_dir=DIGITS / "usps-test",
                                    backbone=str(source), progress=False).metrics["accuracy"]
            row = {"frozen": {"test": frozen, "seconds": round(time.perf_counter() - started, 1)},
                   "fine-tuned": train(data, scratch / f"ft-{labels}", backbone=str(source)),
                   "from scratch": train(data, scratch / f"scratch-{labels}", backbone=ARCH, pretrained=False,
                                         command="pretrain")}
            rows["labels"][labels] = row
            print(f"usps {labels:>3} per class: " + "  ".join(f"{k} {v['test']:.4f}" for k, v in row.items()),
                  flush=True)
        data = subset(DIGITS / "usps-1800", 50, scratch) if "50" not in args.labels.split(",") \
            else scratch / "usps-1800-50"
        for k in (int(v) for v in args.first.split(",")):
            options = {"backbone": ARCH, "pretrained": False} if k == 0 else \
                {"backbone": ARCH, "transfer_layers": f"first:{k}", "transfer_from": str(source)}
            rows["first_k"][k] = train(data, scratch / f"first-{k}", command="pretrain", **options)
            print(f"first:{k:<2d} copied from MNIST, 50 labels/class: usps-test {rows['first_k'][k]['test']:.4f}",
                  flush=True)
        save_rows(rows, args.json)


if __name__ == "__main__":
    main()
