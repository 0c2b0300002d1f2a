"""How close does cold feature extraction come to what this CPU can do? (issue #12)

The bound: per image, the CPU time to decode + resize + crop it the way graft does (PIL, draft
mode) plus the CPU time of the network alone in ONNX Runtime (one thread, batches of 32), both
measured here with ``time.process_time``; with C cores perfectly busy, C / (decode + network)
images per second. Then graft's cold extraction of the same images (empty feature cache, the
ONNX export already on disk) in one process (decode thread + ORT threads) and in worker
processes, each as images/s and as a share of the bound.

    python bench/bench_extraction_bound.py                  # flowers17, all 1360 images
    python bench/bench_extraction_bound.py --limit 400
"""
from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "flowers17"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("data", nargs="?", default=str(DEFAULT_DATA))
    parser.add_argument("--backbone", default="tf_efficientnet_lite0")
    parser.add_argument("--limit", type=int, default=None)
    args = parser.parse_args()
    os.environ["GRAFT_CACHE_DIR"] = tempfile.mkdtemp(prefix="bench-bound-")

    from graft._io.onnx import OnnxRunner
    from graft.data.folders import load_image, scan_folder
    from graft.features.extractor import FeatureExtractor

    paths = scan_folder(args.data).paths[: args.limit]
    for path in paths:  # page cache warm for every measurement alike
        Path(path).read_bytes()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()

    warm = FeatureExtractor(args.backbone, cache=False, processes=0).fit()
    warm.extract(paths[:2])  # exports the network once; every row below reuses the export
    prep = warm.preprocessing_

    began = time.process_time()
    arrays = [prep.to_array(load_image(p, min_side=prep.resize_size)) for p in paths]
    decode = (time.process_time() - began) / len(paths)

    runner = OnnxRunner(warm._onnx_path_, threads=1)
    batch = np.stack(arrays[:32])
    runner(batch)
    began = time.process_time()
    for start in range(0, len(arrays), 32):
        runner(np.stack(arrays[start:start + 32]))
    network = (time.process_time() - began) / len(paths)
    bound = cores / (decode + network)
    print(f"{len(paths)} images, {cores} cores: decode+resize {decode * 1e3:.2f} ms CPU/image, network "
          f"{network * 1e3:.2f} ms CPU/image -> bound {bound:.1f} images/s")

    for label, processes in (("one process (decode thread + ORT threads)", 0), ("worker processes", "auto")):
        # a cold feature cache that already holds the ONNX export (exporting is a one-off)
        cold = Path(tempfile.mkdtemp(prefix="bench-bound-"))
        (cold / "onnx").mkdir()
        shutil.copy(warm._onnx_path_, cold / "onnx" / Path(warm._onnx_path_).name)
        os.environ["GRAFT_CACHE_DIR"] = str(cold)
        extractor = FeatureExtractor(args.backbone, processes=processes).fit()
        began = time.perf_counter()
        found = extractor.extract(paths)
        seconds = time.perf_counter() - began
        rate = len(found) / seconds
        print(f"graft cold extraction, {label:42s} {seconds:6.1f} s  {rate:6.1f} images/s  "
              f"{rate / bound:.2f} of the bound")


if __name__ == "__main__":
    main()
