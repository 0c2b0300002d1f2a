"""Which frozen features and head choices reach issue #12's accuracy bars? (flowers17 >= 97.5 %
on the 25 % split with seed 0, hymenoptera >= 96 % on its val folder.)

Extracts (through graft's feature cache: run once cold, then seconds) the pooled features of
each backbone for every image and its horizontal mirror, then fits graft's logreg head on:
a backbone's features, the mirror-averaged features, concatenations of two backbones, and the
mirrors as extra training images; each at graft's CV-chosen C and at fixed Cs.

    python bench/bench_frozen_accuracy.py                     # lite0, lite1, lite2
    python bench/bench_frozen_accuracy.py --backbones tf_efficientnet_lite0
"""
from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

import numpy as np

DATASETS = Path(__file__).resolve().parents[2] / "shared" / "datasets"


def splits():
    from graft.data.folders import load_train_val

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        flowers = load_train_val(DATASETS / "flowers17", val_fraction=0.25, seed=0)
        hymenoptera = load_train_val(DATASETS / "hymenoptera" / "train", val_dir=DATASETS / "hymenoptera" / "val")
    return {"flowers17": flowers, "hymenoptera": hymenoptera}


def features(backbone: str, folders, flip: bool) -> list[np.ndarray]:
    from graft.features.extractor import FeatureExtractor

    extractor = FeatureExtractor(backbone, flip=flip, progress=True).fit()
    return [extractor.extract_folder(folder, strict=True).vectors for folder in folders]


def score(train_sets, val_sets, y_train, y_val, classes, mode: str, C=None) -> float:
    """Fit logreg on the training features (mode: plain / average / augment) and score."""
    from graft.heads.classical import fit_head

    (a0, a1), (b0, b1) = train_sets, val_sets
    if mode == "augment":  # the mirrors as extra training images, test-time average
        X, y = np.vstack([a0, a1]), np.concatenate([y_train, y_train])
    else:
        X, y = ((a0 + a1) / 2 if mode == "average" else a0), y_train
    head = fit_head("logreg", X, y, classes, 0, params={"C": C} if C else None)
    if mode == "augment":
        probabilities = (head.probabilities(b0) + head.probabilities(b1)) / 2
    else:
        probabilities = head.probabilities((b0 + b1) / 2 if mode == "average" else b0)
    return float((probabilities.argmax(1) == y_val).mean())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--backbones", default="tf_efficientnet_lite0,tf_efficientnet_lite1,tf_efficientnet_lite2")
    args = parser.parse_args()
    backbones = args.backbones.split(",")
    data = splits()
    extracted, seconds = {}, {}
    for name, (train, val) in data.items():
        for backbone in backbones:
            start = time.perf_counter()
            plain = features(backbone, [train, val], flip=False)
            mirrored = features(backbone, [train, val], flip=True)
            seconds[(name, backbone)] = time.perf_counter() - start
            extracted[(name, backbone)] = (plain, mirrored)
    combos = [[b] for b in backbones] + [[a, b] for i, a in enumerate(backbones) for b in backbones[i + 1:]]
    Cs = [None, 0.1, 0.3, 1.0]
    print(f"{'features':44s} {'mode':8s} " + "  ".join(f"{n + ' C=' + (str(c) if c else 'cv'):>22s}"
                                                      for n in data for c in Cs))
    for combo in combos:
        for mode in ("plain", "average", "augment"):
            cells = []
            for name, (train, val) in data.items():
                parts = [extracted[(name, b)] for b in combo]
                a0 = np.hstack([p[0][0] for p in parts])
                a1 = np.hstack([p[1][0] for p in parts])
                b0 = np.hstack([p[0][1] for p in parts])
                b1 = np.hstack([p[1][1] for p in parts])
                for C in Cs:
                    cells.append(score((a0, a1), (b0, b1), train.labels, val.labels, len(train.classes), mode, C))
            print(f"{'+'.join(b.replace('tf_efficientnet_', '') for b in combo):44s} {mode:8s} "
                  + "  ".join(f"{c:22.4f}" for c in cells), flush=True)
    for (name, backbone), s in seconds.items():
        print(f"extraction (plain + mirror, as run: cold or cached) {name} {backbone}: {s:.1f} s")


if __name__ == "__main__":
    main()
