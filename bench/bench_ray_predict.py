"""``graft predict --ray 2`` (2 local Ray actors) against ``graft predict`` in one process (issue 29).

A model is fitted once (``graft fit`` on mnist-2000, lite0 at its own 224 px), its model.onnx
exported by a first small predict; then the 10000 MNIST test digits
(../shared/datasets/digits/mnist-test) are predicted by the command, as a user runs it, two ways,
in one run: ``single`` (one process: decode threads + one ONNX Runtime session on every core)
and ``ray`` (``--ray 2``: a local Ray cluster of 2 CPUs started by the command, 2 actors with one
single-threaded session each; Ray's start-up is counted). Both write ``--csv -k 3``.

Prints images/s of each (the command's wall time, Python start-up included), the ratio, and how
the rows compare: the same paths, ranks and classes in the same order, how many lines are
byte-identical, and the max |difference| of the probabilities and novelty printed.

    python bench/bench_ray_predict.py               # ~10 minutes on a loaded 2-core machine
    python bench/bench_ray_predict.py --limit 500
    python bench/bench_ray_predict.py --run RUN     # a run fitted before: `graft fit mnist-2000 -o RUN`
"""
from __future__ import annotations

import argparse
import csv
import io
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from common import save_rows, scratch_folder

DIGITS = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "digits"
GRAFT = [sys.executable, "-m", "graft"]


def _predict(run: Path, folder: Path, *extra: str) -> tuple[float, subprocess.CompletedProcess]:
    start = time.perf_counter()
    done = subprocess.run([*GRAFT, "predict", str(run), str(folder), "--csv", "-k", "3", "-q", *extra],
                          capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - start
    if done.returncode not in (0, 1):
        raise SystemExit(f"graft predict {' '.join(extra)} failed ({done.returncode}): {done.stderr[-2000:]}")
    return seconds, done


def _compare(single: str, other: str) -> dict:
    a, b = list(csv.DictReader(io.StringIO(single))), list(csv.DictReader(io.StringIO(other)))
    same_keys = [(r["path"], r["rank"], r["class"]) for r in a] == [(r["path"], r["rank"], r["class"]) for r in b]
    diffs = {key: float(np.abs(np.array([float(r[key] or 0) for r in a]) - [float(r[key] or 0) for r in b]).max())
             for key in ("probability", "novelty")} if same_keys else {}
    lines_a, lines_b = single.splitlines(), other.splitlines()
    return {"rows": len(a), "same_paths_ranks_classes": same_keys,
            "identical_lines": sum(x == y for x, y in zip(lines_a, lines_b)), "lines": len(lines_a),
            **{f"max_abs_diff_{k}": v for k, v in diffs.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--limit", type=int, default=None, help="Only the first N test digits (sorted paths).")
    parser.add_argument("--workers", type=int, default=2, help="Ray actors (default 2).")
    parser.add_argument("--run", type=Path, help="A run already fitted by `graft fit mnist-2000` (skips the fit).")
    parser.add_argument("--json", help="Also write the rows here.")
    args = parser.parse_args()
    with scratch_folder("bench-ray-predict-") as scratch:
        os.environ["GRAFT_CACHE_DIR"] = str(scratch / "cache")
        os.environ["GRAFT_NO_PROGRESS"] = "1"
        run = args.run or scratch / "run"
        if not args.run:
            subprocess.run([*GRAFT, "fit", str(DIGITS / "mnist-2000"), "-o", str(run), "-q"], check=True,
                           capture_output=True)
        paths = sorted((DIGITS / "mnist-test").glob("*/*.png"))[:args.limit]
        folder = scratch / "images"  # the digits as links: a folder of exactly the N images asked for
        for path in paths:
            (folder / path.parent.name).mkdir(parents=True, exist_ok=True)
            (folder / path.parent.name / path.name).symlink_to(path)
        _predict(run, folder / paths[0].parent.name)  # exports model.onnx once, outside the timings
        single_s, single = _predict(run, folder)
        ray_s, spread = _predict(run, folder, "--ray", str(args.workers))
    comparison = _compare(single.stdout, spread.stdout)
    rows = [{"method": "single", "images": len(paths), "seconds": single_s, "images_per_s": len(paths) / single_s},
            {"method": f"ray x{args.workers}", "images": len(paths), "seconds": ray_s,
             "images_per_s": len(paths) / ray_s, "vs_single": single_s / ray_s, **comparison,
             "same_stderr": spread.stderr == single.stderr, "same_exit": spread.returncode == single.returncode}]
    print(f"graft predict --csv -k 3 on {len(paths)} MNIST test digits (lite0 224 px, fitted on mnist-2000), "
          f"load {os.getloadavg()[0]:.1f}")
    print("| method | s | images/s | vs single |\n|---|---|---|---|")
    for r in rows:
        print(f"| {r['method']} | {r['seconds']:.1f} | {r['images_per_s']:.1f} | {r.get('vs_single', 1.0):.2f}x |")
    print(f"rows: {comparison}; stderr equal: {rows[1]['same_stderr']}, exit status equal: {rows[1]['same_exit']}")
    save_rows(rows, args.json)


if __name__ == "__main__":
    main()
