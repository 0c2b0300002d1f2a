"""Self-taught learning (issue 28): `graft fit` with 10 labelled images per class on lite0's
ImageNet features against the same fit on a backbone continued self-supervised
(`graft pretrain --unlabelled`) on the unlabelled images, same labelled draws, same head,
scored on a held-out test folder. Each labelled draw is `graft fit --shots K --seed S`.

    python bench/bench_selftaught.py                               # MNIST-M: pretrain once, then 3 draws
    python bench/bench_selftaught.py --run RUN                     # reuse a finished pretrain run
    python bench/bench_selftaught.py --pretrain-args "--image-size 96 --stages top4:4"
    python bench/bench_selftaught.py --data flowers17 --shots 10   # the do-no-harm check

Baselines: lite0's ImageNet features at their own size (224, `graft fit`'s default) and at the
run's size. Prints one row per (backbone, draw) and the mean gap in points; ``--json PATH``
saves the rows.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from common import save_rows, scratch_folder

DATASETS = Path(__file__).resolve().parents[2] / "shared" / "datasets"
DATA = {"mnistm": (DATASETS / "digits" / "mnistm-2000", DATASETS / "digits" / "mnistm-test"),
        "flowers17": (DATASETS / "flowers17", None)}
GRAFT = [sys.executable, "-m", "graft"]


def graft(*args) -> float:
    """Run one graft command; its wall seconds."""
    start = time.perf_counter()
    subprocess.run([*GRAFT, *map(str, args)], check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def fit(data: Path, test: Path | None, backbone: str, size: int | None, shots: int, seed: int, out: Path) -> dict:
    args = [data, "--backbone", backbone, "--shots", shots, "--seed", seed, "-o", out, "--overwrite"]
    args += ["--image-size", size] if size else []
    args += ["--test", test] if test else []
    seconds = graft("fit", *args)
    metrics = json.loads((out / "metrics.json").read_text())
    scored = metrics["test"] if test else metrics  # flowers17 has no test folder: its held-out split
    return {"accuracy": scored["accuracy"], "seconds": round(seconds, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", choices=sorted(DATA), default="mnistm")
    parser.add_argument("--run", help="a finished `graft pretrain --unlabelled` run (default: pretrain one)")
    parser.add_argument("--pretrain-args", default="", help="extra options for graft pretrain")
    parser.add_argument("--shots", type=int, default=10)
    parser.add_argument("--seeds", default="0,1,2", help="labelled draws (fit --seed)")
    parser.add_argument("--json", help="write the rows here")
    args = parser.parse_args()
    with scratch_folder("selftaught-") as scratch:
        run_bench(args, scratch)


def run_bench(args, scratch: Path) -> None:
    data, test = DATA[args.data]
    run = Path(args.run) if args.run else scratch / f"pretrain-{args.data}"
    if not args.run:
        seconds = graft("pretrain", "--unlabelled", data, "-o", run, "--overwrite", *shlex.split(args.pretrain_args))
        print(f"graft pretrain --unlabelled {data} {args.pretrain_args}: {seconds:.0f} s, peak RSS "
              f"{resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024:.0f} MiB")
    pretrained = json.loads((run / "metrics.json").read_text())
    size = pretrained["image_size"]
    backbones = {"imagenet@224": ("tf_efficientnet_lite0", None), f"imagenet@{size}": ("tf_efficientnet_lite0", size),
                 f"self-taught@{size}": (str(run), None)}
    rows = []
    for seed in [int(s) for s in args.seeds.split(",")]:
        for name, (backbone, fit_size) in backbones.items():
            row = {"data": args.data, "backbone": name, "shots": args.shots, "seed": seed,
                   **fit(data, test, backbone, fit_size, args.shots, seed, scratch / f"fit-{name}-{seed}")}
            rows.append(row)
            print(json.dumps(row), flush=True)
    means = {name: float(np.mean([r["accuracy"] for r in rows if r["backbone"] == name])) for name in backbones}
    for name, mean in means.items():
        print(f"{name:>20}: mean accuracy {100 * mean:.1f} %")
    base = means["imagenet@224"]
    print(f"self-taught - imagenet@224: {100 * (means[f'self-taught@{size}'] - base):+.1f} points "
          f"(pretrain: {pretrained['seconds']:.0f} s, peak RSS {pretrained['peak_rss_mib']:.0f} MiB, "
          f"{pretrained['epochs_run']} epochs, {os.cpu_count()} CPUs)")
    save_rows(rows, args.json)


if __name__ == "__main__":
    main()
