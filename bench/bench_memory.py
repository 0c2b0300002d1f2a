"""Peak memory of feature extraction: does it stay flat as the number of images grows?

Run (from the repository root):

    .venv/bin/python bench/bench_memory.py
    .venv/bin/python bench/bench_memory.py --small 50 --large 500     # quick smoke run

Extraction of the first ``--small`` (500) and the first ``--large`` (5000) images (sorted
paths) of MNIST-test is run in two separate child processes of this script, each with its own
fresh, empty ``GRAFT_CACHE_DIR`` (so both export the ONNX graph alike) and
``graft.FeatureExtractor(image_size=96, cache=False, progress=False).fit().extract(paths)``.
Image size 96 (not the backbone's 224) only keeps the run short; the per-image memory that
could grow with N (the output rows, 1280 floats each) does not depend on it.

Each child reports ``resource.getrusage(RUSAGE_SELF).ru_maxrss`` (peak RSS, KiB on Linux)
right after imports + model build (its baseline) and after extraction. The plain baseline here
is the small run: the figure of merit is peak(large) - peak(small), target <= 200 MB.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

DEFAULT_DATA = "/work/shared/datasets/digits/mnist-test"
IMAGE_SIZE = 96


def peak_rss_kib() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def current_rss_kib() -> int:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return -1


def child(data: str, n: int) -> None:
    import graft
    from graft.data.folders import scan_folder

    paths = sorted(scan_folder(data).paths)[:n]
    extractor = graft.FeatureExtractor(image_size=IMAGE_SIZE, cache=False, progress=False).fit()
    baseline_peak, baseline_now = peak_rss_kib(), current_rss_kib()
    t0 = time.perf_counter()
    features = extractor.extract(paths)
    seconds = time.perf_counter() - t0
    print(json.dumps({
        "n": len(paths),
        "baseline_peak_kib": baseline_peak,
        "baseline_rss_kib": baseline_now,
        "peak_kib": peak_rss_kib(),
        "rss_after_kib": current_rss_kib(),
        "seconds": seconds,
        "shape": list(features.vectors.shape),
        "engine": extractor.engine_,
        "skipped": len(features.skipped),
    }))


def run_child(data: str, n: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="graft-bench-mem-") as cache_dir:
        env = dict(os.environ, GRAFT_CACHE_DIR=cache_dir)
        proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", str(n), "--data", data],
                              env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"child for n={n} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=DEFAULT_DATA)
    parser.add_argument("--small", type=int, default=500)
    parser.add_argument("--large", type=int, default=5000)
    parser.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child is not None:
        child(args.data, args.child)
        return 0

    print(f"data: {args.data}, first N sorted paths; image_size={IMAGE_SIZE} (not 224: keeps the run short); "
          f"cache=False; each N in its own child process; load average {os.getloadavg()[0]:.2f}")
    results = [run_child(args.data, n) for n in (args.small, args.large)]
    mb = lambda kib: kib / 1024  # noqa: E731  (MiB, reported as MB)
    print()
    print(f"{'images':>7} {'base RSS MB':>12} {'base peak MB':>13} {'peak MB':>9} {'peak-base MB':>13} "
          f"{'s':>7} {'img/s':>7} engine  features")
    for r in results:
        print(f"{r['n']:>7} {mb(r['baseline_rss_kib']):>12.1f} {mb(r['baseline_peak_kib']):>13.1f} "
              f"{mb(r['peak_kib']):>9.1f} {mb(r['peak_kib'] - r['baseline_peak_kib']):>13.1f} "
              f"{r['seconds']:>7.1f} {r['n'] / r['seconds']:>7.1f} {r['engine']:<7} {tuple(r['shape'])}")
    small, large = results
    growth = mb(large["peak_kib"] - small["peak_kib"])
    print()
    print(f"peak RSS growth {small['n']} -> {large['n']} images: {growth:.1f} MB "
          f"(target <= 200 MB: {'MET' if growth <= 200 else 'MISSED'}); "
          f"ratio peak(large)/peak(small) = {large['peak_kib'] / small['peak_kib']:.3f}")
    print(f"(output matrix alone at {large['n']} images: {large['shape'][0] * large['shape'][1] * 4 / 2**20:.1f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
