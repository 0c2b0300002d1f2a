"""Fitting a classical head with BLAS on one thread vs BLAS's default threads (issue #12).

graft's fit_head runs the solver under ``single_threaded_blas()``. This bench fits graft's
logreg head (3-fold CV over C, then the final fit) on flowers17's lite0 features, through
graft's feature cache (cold the first time), both ways, in the same process.

    python bench/bench_head_threads.py [--repeats 3]
"""
from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

FLOWERS = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "flowers17"


def main() -> None:
    from threadpoolctl import threadpool_info, threadpool_limits

    from graft.data.folders import load_train_val
    from graft.features.extractor import FeatureExtractor
    from graft.heads import classical, estimators

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        train, _ = load_train_val(FLOWERS, val_fraction=0.25, seed=0)
    X = FeatureExtractor("tf_efficientnet_lite0").fit().extract_folder(train, strict=True).vectors
    y = train.labels
    blas = [(i["internal_api"], i["num_threads"]) for i in threadpool_info() if i["user_api"] == "blas"]
    print(f"{len(X)} x {X.shape[1]} features, {len(train.classes)} classes; BLAS libraries and threads: {blas}")
    default_threads = estimators.single_threaded_blas  # the estimators' fit enters it
    timings = {"default BLAS threads": [], "one BLAS thread (graft)": []}
    for _ in range(args.repeats):
        for name in timings:
            # the "default" row swaps graft's limit for a no-op limit (None = leave threads as they are)
            estimators.single_threaded_blas = default_threads if "graft" in name else \
                (lambda: threadpool_limits(limits=None))
            started = time.perf_counter()
            head = classical.fit_head("logreg", X, y, len(train.classes), 0)
            timings[name].append(time.perf_counter() - started)
    estimators.single_threaded_blas = default_threads
    best = {name: min(values) for name, values in timings.items()}
    for name, seconds in best.items():
        print(f"{name:26s} {seconds:.3f} s (best of {args.repeats}), C={head.params['C']}")
    print(f"ratio one thread / default = {best['one BLAS thread (graft)'] / best['default BLAS threads']:.2f}")


if __name__ == "__main__":
    main()
