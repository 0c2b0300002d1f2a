"""graft cluster against k-means on the same frozen features (issue 25's bars).

flowers17 with -k 17 (bar: accuracy >= 0.82; k-means 0.72-0.76) and hymenoptera train+val
(the two folders' classes joined through links) with -k 2 (bar: >= 0.95), each over seeds;
accuracy is Hungarian-matched, NMI beside it; seconds are the clustering's alone, on cached
features (the first seed may extract them). Runs the command's library function, as
`graft cluster DIR -k K -o RUN --seed S` does.

    python bench/bench_cluster.py [--seeds 0,1,2] [--json out.json]
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import save_rows, scratch_folder  # noqa: E402
from graft.recipes.cluster import ClusterConfig, cluster  # noqa: E402

DATASETS = Path(__file__).resolve().parents[2] / "shared" / "datasets"


def hymenoptera_joined(into: Path) -> Path:
    """hymenoptera train + val as one class-folder tree of links (file names prefixed by split)."""
    for split in ("train", "val"):
        for class_dir in sorted((DATASETS / "hymenoptera" / split).iterdir()):
            (into / class_dir.name).mkdir(parents=True, exist_ok=True)
            for image in sorted(class_dir.iterdir()):
                os.symlink(image, into / class_dir.name / f"{split}-{image.name}")
    return into


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    rows = []
    with scratch_folder("graft-bench-cluster-") as scratch:
        cases = [("flowers17", DATASETS / "flowers17", 17, 0.82),
                 ("hymenoptera train+val", hymenoptera_joined(scratch / "hymenoptera"), 2, 0.95)]
        for name, folder, k, bar in cases:
            for seed in seeds:
                result = cluster(ClusterConfig(data=str(folder), k=k, seed=seed), scratch / f"run-{k}-{seed}",
                                 progress=False)
                m = result.metrics
                row = {"dataset": name, "k": k, "seed": seed, "n": m["n_images"], "accuracy": m["accuracy"],
                       "nmi": m["nmi"], "kmeans_accuracy": m["kmeans_accuracy"], "kmeans_nmi": m["kmeans_nmi"],
                       "cluster_seconds": m["cluster_seconds"], "seconds": m["seconds"]}
                rows.append(row)
                print(f"{name:22s} k={k:2d} seed {seed}: accuracy {row['accuracy']:.4f} NMI {row['nmi']:.4f} | "
                      f"k-means {row['kmeans_accuracy']:.4f} / {row['kmeans_nmi']:.4f} | "
                      f"{row['cluster_seconds']:.1f} s clustering, {row['seconds']:.1f} s in all", flush=True)
            mine = [r for r in rows if r["dataset"] == name]
            mean = {key: float(np.mean([r[key] for r in mine])) for key in ("accuracy", "nmi", "kmeans_accuracy",
                                                                           "kmeans_nmi", "cluster_seconds")}
            print(f"{name:22s} mean of {len(mine)}: accuracy {mean['accuracy']:.4f} NMI {mean['nmi']:.4f} | k-means "
                  f"{mean['kmeans_accuracy']:.4f} / {mean['kmeans_nmi']:.4f} | {mean['cluster_seconds']:.1f} s | "
                  f"bar {bar}: {'met' if mean['accuracy'] >= bar else 'NOT met'}", flush=True)
    save_rows(rows, args.json)


if __name__ == "__main__":
    main()
