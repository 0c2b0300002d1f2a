"""Self-taught learning (issue 28): `graft fit` with 10 labelled images per class on lite0's
ImageNet features against the same fit on a backbone continued self-supervised
(`graft pretrain --unlabelled`) on the unlabelled images, same labelled draws, same head,
scored on a held-out test folder. Each labelled draw is `graft fit --shots K --seed S`.

    python bench/bench_selftaught.py                               # MNIST-M: pretrain once, then 3 draws
    python bench/bench_selftaught.py --pretrain-seeds 0,1,2        # 3 pretraining runs x 3 draws
    python bench/bench_selftaught.py --run RUN[,RUN2,...]          # reuse finished pretrain runs
    python bench/bench_selftaught.py --keep runs/st                # keep the pretraining runs there
    python bench/bench_selftaught.py --finetune                    # also graft finetune from each
    python bench/bench_selftaught.py --pretrain-args "--image-size 96 --stages top4:4"
    python bench/bench_selftaught.py --data flowers17 --shots 10   # the do-no-harm check

Baselines: lite0's ImageNet features at their own size (224, `graft fit`'s default) and at the
run's size. ``--finetune``: `graft finetune` (its defaults) from ImageNet and from each
self-taught run on the same K-per-class images (the draw `fit --shots` makes, linked into a
folder), with fit's validation split as ``--val`` for both. Prints one row per (backbone,
draw) and the mean gaps in points; ``--json PATH`` saves the rows.
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


def scored(out: Path, test: Path | None, seconds: float) -> dict:
    metrics = json.loads((out / "metrics.json").read_text())
    found = metrics["test"] if test else metrics  # flowers17 has no test folder: its held-out split
    return {"accuracy": found["accuracy"], "seconds": round(seconds, 1)}


def fit(data: Path, test: Path | None, backbone: str, size: int | None, shots: int, seed: int, out: Path) -> dict:
    args = [data, "--backbone", backbone, "--shots", shots, "--seed", seed, "-o", out, "--overwrite"]
    args += ["--image-size", size] if size else []
    args += ["--test", test] if test else []
    return scored(out, test, graft("fit", *args))


def labelled_draw(data: Path, shots: int, seed: int, into: Path) -> tuple[Path, Path]:
    """The K-per-class training images and the validation split `graft fit --shots K --seed S`
    uses, linked into ``into/train`` and ``into/val`` (class folders), for graft finetune."""
    from graft.data.folders import load_train_val
    from graft.data.splits import take_per_class
    from graft.recipes.settings.names import DEFAULT_VAL_FRACTION

    train, val = load_train_val(data, val_fraction=DEFAULT_VAL_FRACTION, seed=seed)
    for name, folder in (("train", take_per_class(train, shots, seed)), ("val", val)):
        for path, label in zip(folder.paths, folder.labels):
            link = into / name / folder.classes[label] / Path(path).name
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(Path(path).resolve())
    return into / "train", into / "val"


def finetune(train: Path, val: Path, test: Path | None, backbone: str, out: Path) -> dict:
    args = [train, "--val", val, "--backbone", backbone, "-o", out, "--overwrite"]
    args += ["--test", test] if test else []
    return scored(out, test, graft("finetune", *args))


def pretrain(data: Path, seed: int, extra: str, out: Path) -> Path:
    seconds = graft("pretrain", "--unlabelled", data, "--seed", seed, "-o", out, "--overwrite", *shlex.split(extra))
    print(f"graft pretrain --unlabelled {data} --seed {seed} {extra}: {seconds:.0f} s, peak RSS "
          f"{resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024:.0f} MiB", flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", choices=sorted(DATA), default="mnistm")
    parser.add_argument("--run", help="finished `graft pretrain --unlabelled` runs, comma-separated (default: "
                        "pretrain them)")
    parser.add_argument("--pretrain-seeds", default="0", help="one pretraining run per seed (pretrain --seed)")
    parser.add_argument("--pretrain-args", default="", help="extra options for graft pretrain")
    parser.add_argument("--shots", type=int, default=10)
    parser.add_argument("--seeds", default="0,1,2", help="labelled draws (fit --seed)")
    parser.add_argument("--finetune", action="store_true", help="also graft finetune from ImageNet and each run")
    parser.add_argument("--no-imagenet", action="store_true",
                        help="skip the ImageNet baselines (the same draws' rows come from another invocation)")
    parser.add_argument("--keep", help="pretrain into this folder and keep the runs (default: a scratch folder)")
    parser.add_argument("--json", help="write the rows here")
    args = parser.parse_args()
    with scratch_folder("selftaught-") as scratch:
        run_bench(args, scratch)


def run_bench(args, scratch: Path) -> None:
    data, test = DATA[args.data]
    into = Path(args.keep) if args.keep else scratch
    seeds = [int(s) for s in args.pretrain_seeds.split(",")]
    runs = ([Path(r) for r in args.run.split(",")] if args.run else
            [pretrain(data, s, args.pretrain_args, into / f"pretrain-{s}") for s in seeds])
    pretrained = [json.loads((run / "metrics.json").read_text()) for run in runs]
    size = pretrained[0]["image_size"]
    backbones = {} if args.no_imagenet else {"imagenet@224": ("tf_efficientnet_lite0", None),
                                             f"imagenet@{size}": ("tf_efficientnet_lite0", size)}
    backbones |= {f"self-taught@{size}#{run.name}": (str(run), None) for run in runs}
    rows = []
    for seed in [int(s) for s in args.seeds.split(",")]:
        for name, (backbone, fit_size) in backbones.items():
            rows.append({"data": args.data, "backbone": name, "method": "fit", "shots": args.shots, "seed": seed,
                         **fit(data, test, backbone, fit_size, args.shots, seed, scratch / f"fit-{name}-{seed}")})
            print(json.dumps(rows[-1]), flush=True)
        if args.finetune:
            train, val = labelled_draw(data, args.shots, seed, scratch / f"draw-{seed}")
            for name, (backbone, fit_size) in backbones.items():
                if fit_size is None:  # each network at its own size: ImageNet's 224 px, the run's size
                    rows.append({"data": args.data, "backbone": name, "method": "finetune", "shots": args.shots,
                                 "seed": seed, **finetune(train, val, test, backbone, scratch / f"ft-{name}-{seed}")})
                    print(json.dumps(rows[-1]), flush=True)
    report(rows, size, pretrained)
    save_rows(rows, args.json)


def report(rows: list[dict], size: int, pretrained: list[dict]) -> None:
    for method in ("fit", "finetune"):
        mine = [r for r in rows if r["method"] == method]
        if not mine:
            continue
        means = {}
        for r in mine:
            means.setdefault(r["backbone"].split("#")[0], []).append(r["accuracy"])
        for name, values in means.items():
            print(f"{method:>8} {name:>16}: mean accuracy {100 * np.mean(values):.1f} % over {len(values)} runs")
        if "imagenet@224" in means:
            gap = np.mean(means[f"self-taught@{size}"]) - np.mean(means["imagenet@224"])
            print(f"{method}: self-taught - imagenet@224: {100 * gap:+.1f} points")
    seconds = [p["seconds"] for p in pretrained]
    print(f"pretraining: {np.mean(seconds):.0f} s mean ({min(seconds):.0f}-{max(seconds):.0f}), peak RSS "
          f"{max(p['peak_rss_mib'] for p in pretrained):.0f} MiB, {pretrained[0]['epochs_run']} epochs, "
          f"{os.cpu_count()} CPUs")


if __name__ == "__main__":
    main()
