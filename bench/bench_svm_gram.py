"""The SVM heads on a precomputed kernel matrix vs libsvm's own kernel (issue 30, item 21).

graft's linear-svm and rbf-svm heads hand libsvm the (n, n) kernel matrix, computed by one BLAS
product, instead of letting libsvm evaluate each 1280-d dot product itself. Same solver, same C
grid, same folds: this bench fits each head both ways on flowers17's lite0 features (through
graft's feature cache, cold the first time), in the same process, and prints the ratio and the
largest difference between the two heads' validation scores.

    python bench/bench_svm_gram.py [--repeats 3]
"""
from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

FLOWERS = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "flowers17"


def main() -> None:
    import numpy as np

    from graft.data.folders import load_train_val
    from graft.features.extractor import FeatureExtractor
    from graft.heads import classical, search

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        train, val = load_train_val(FLOWERS, val_fraction=0.25, seed=0)
    extractor = FeatureExtractor("tf_efficientnet_lite0").fit()
    X, Xv = (extractor.extract_folder(f, strict=True).vectors for f in (train, val))
    y, yv = train.labels, val.labels
    print(f"{len(X)} x {X.shape[1]} training features, {len(train.classes)} classes, {len(Xv)} validation images")
    cap = search.GRAM_MAX_IMAGES  # read by graft.heads.search.gram at each fit
    for head in ("linear-svm", "rbf-svm"):
        times = {"libsvm's kernel (baseline)": [], "precomputed kernel (graft)": []}
        logits = {}
        for _ in range(args.repeats):
            for name in times:
                search.GRAM_MAX_IMAGES = 0 if name.startswith("libsvm") else cap  # 0: never precompute
                start = time.perf_counter()
                fitted = classical.fit_head(head, X, y, len(train.classes))
                times[name].append(time.perf_counter() - start)
                logits[name] = fitted.logits(Xv)
        search.GRAM_MAX_IMAGES = cap
        base, ours = (min(t) for t in times.values())
        acc = {n: float((v.argmax(1) == yv).mean()) for n, v in logits.items()}
        gap = float(np.abs(np.subtract(*logits.values())).max())
        for name, t in times.items():
            print(f"{head:10s} {name:28s} best {min(t):.3f} s  runs {', '.join(f'{v:.3f}' for v in t)}  "
                  f"val accuracy {acc[name]:.4f}")
        print(f"{head:10s} precomputed / baseline = {ours / base:.3f}  (max |score difference| {gap:.2e})")


if __name__ == "__main__":
    main()
