"""Frozen extraction on Ray Data with 2 local workers against one process (issue 29).

The 10000 MNIST test digits (../shared/datasets/digits/mnist-test) through lite0's feature
network in ONNX Runtime, three ways, in this order, in one run:

* ``single``: one process (FeatureExtractor with processes=0: decode threads + one ONNX Runtime
  session on every core), what the issue calls single-process throughput;
* ``forked``: graft's default on 2 cores (two forked workers, one single-threaded session each);
* ``ray``: :func:`graft.features.ray_workers.extract_on_ray`, a local Ray cluster of 2 CPUs,
  2 actors with one single-threaded session each; Ray's start-up is counted.

Prints images/s of each, the ratio to ``single`` and the max |difference| of the features.

    python bench/bench_ray_extract.py            # ~10 minutes on a quiet 2-core machine
    python bench/bench_ray_extract.py --limit 1000
"""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np

from common import save_rows, scratch_folder

MNIST = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "digits" / "mnist-test"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--limit", type=int, default=None, help="Only the first N digits (sorted paths).")
    parser.add_argument("--json", help="Also write the rows here.")
    args = parser.parse_args()
    with scratch_folder("bench-ray-") as folder:
        os.environ["GRAFT_CACHE_DIR"] = str(folder / "cache")  # no feature cache shared with other runs
        from graft._io.onnx import export_onnx
        from graft.features.extractor import FeatureExtractor
        from graft.features.ray_workers import extract_on_ray

        paths = sorted(MNIST.glob("*/*.png"))[:args.limit]
        timings, results = {}, {}
        for name, processes in (("single", 0), ("forked", 2)):
            extractor = FeatureExtractor(cache=False, progress=False, processes=processes).fit()
            start = time.perf_counter()
            results[name] = extractor.extract(paths).vectors
            timings[name] = time.perf_counter() - start
        onnx = export_onnx(extractor.feature_net_, folder / "features.onnx", extractor.preprocessing_.size,
                           ["features"])
        start = time.perf_counter()
        vectors = np.zeros_like(results["single"])
        for positions, found, failures in extract_on_ray(onnx, extractor.preprocessing_.to_dict(), False,
                                                         [str(p) for p in paths], 32, 2):
            assert not failures, failures
            vectors[positions] = found
        timings["ray"], results["ray"] = time.perf_counter() - start, vectors
    rows = [{"method": name, "images": len(paths), "seconds": timings[name],
             "images_per_s": len(paths) / timings[name], "vs_single": timings["single"] / timings[name],
             "max_abs_diff": float(np.abs(results[name] - results["single"]).max())} for name in timings]
    print(f"{len(paths)} MNIST test digits, lite0 features ({results['single'].shape[1]}-d), load "
          f"{os.getloadavg()[0]:.1f}")
    print("| method | s | images/s | vs single | max abs diff vs single |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['method']} | {r['seconds']:.1f} | {r['images_per_s']:.1f} | {r['vs_single']:.2f}x | "
              f"{r['max_abs_diff']:.1e} |")
    save_rows(rows, args.json)


if __name__ == "__main__":
    main()
