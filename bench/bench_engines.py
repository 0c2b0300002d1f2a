"""Frozen-inference engines and image decoding, each against its plain baseline.

Run (from the repository root):

    .venv/bin/python bench/bench_engines.py
    .venv/bin/python bench/bench_engines.py --images 64 --decode 40     # quick smoke run

1. Throughput of EfficientNet-Lite0's pooled feature network
   (``graft.create_backbone().feature_net(None)``) at 224 px on 256 random images, batch 32:
   eager torch (``graft._io.onnx.TorchRunner``, the baseline) vs ONNX Runtime
   (``graft._io.onnx.export_onnx`` + ``OnnxRunner``). One warm-up batch each, then the best of
   ``--repeats`` timed passes over all images.
2. Decode + preprocess of 200 flowers17 JPEGs (first 200 sorted paths):
   ``graft.data.folders.load_image(p, min_side=None)`` (the baseline, full decode) vs
   ``load_image(p, min_side=256)`` (JPEG draft: libjpeg may decode at 1/2, 1/4, 1/8 scale while
   keeping the shorter side >= 256), each followed by ``Preprocessing.to_array``. The naive
   ``Image.open().convert('RGB')`` + timm eval transform is shown for reference.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

FLOWERS = "/work/shared/datasets/flowers17"


def cpu_seconds() -> tuple[float, float]:
    """(busy CPU seconds of the whole machine, of this process)."""
    with open("/proc/stat") as handle:
        fields = [int(x) for x in handle.readline().split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq = fields[:7]
    own = os.times()
    return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK"), own.user + own.system


def other_cpu(fn, *args) -> None:
    """Run ``fn`` and print the CPU seconds other processes used meanwhile (0 = uncontended)."""
    machine0, own0 = cpu_seconds()
    fn(*args)
    machine1, own1 = cpu_seconds()
    print(f"(other processes used {max(0.0, (machine1 - machine0) - (own1 - own0)):.1f} CPU s during this part)")


def best_pass(fn, batches, repeats: int) -> float:
    fn(batches[0])  # warm-up
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        for batch in batches:
            fn(batch)
        best = min(best, time.perf_counter() - t0)
    return best


def engines(n_images: int, batch: int, repeats: int) -> None:
    import torch

    import graft
    from graft._io.onnx import OnnxRunner, TorchRunner, export_onnx

    net = graft.create_backbone().feature_net(None)
    images = np.random.default_rng(0).standard_normal((n_images, 3, 224, 224)).astype(np.float32)
    batches = [images[i:i + batch] for i in range(0, n_images, batch)]
    with tempfile.TemporaryDirectory(prefix="graft-bench-onnx-") as tmp:
        t0 = time.perf_counter()
        path = export_onnx(net, Path(tmp) / "lite0.onnx", 224, ["features"])
        export_s = time.perf_counter() - t0
        onnx = OnnxRunner(path)
        eager = TorchRunner(net)
        diff = float(np.abs(onnx(batches[0]) - eager(batches[0])).max())
        t_torch = best_pass(eager, batches, repeats)
        t_onnx = best_pass(onnx, batches, repeats)
    print(f"engines: tf_efficientnet_lite0 pooled features, 224 px, {n_images} random images, batch {batch}, "
          f"best of {repeats}; torch {torch.__version__} ({torch.get_num_threads()} threads), "
          f"onnxruntime {__import__('onnxruntime').__version__}; ONNX export {export_s:.1f} s; "
          f"max |onnx - torch| = {diff:.2e}")
    print(f"{'engine':<14} {'s':>7} {'img/s':>8}")
    print(f"{'eager torch':<14} {t_torch:>7.2f} {n_images / t_torch:>8.1f}")
    print(f"{'onnxruntime':<14} {t_onnx:>7.2f} {n_images / t_onnx:>8.1f}")
    print(f"ratio onnx / torch throughput = {t_torch / t_onnx:.2f}x")


def decoding(n_images: int, repeats: int) -> None:
    import timm.data
    from PIL import Image

    import graft
    from graft.data.folders import load_image, scan_folder

    backbone = graft.create_backbone()
    prep = backbone.preprocessing
    transform = timm.data.create_transform(**timm.data.resolve_data_config({}, model=backbone.model))
    paths = sorted(scan_folder(FLOWERS).paths)[:n_images]
    for p in paths:  # same OS page cache for every variant
        Path(p).read_bytes()
    sizes = [Image.open(p).size for p in paths]
    shrinkable = sum(min(s) >= 2 * prep.resize_size for s in sizes)

    variants = {
        "full decode": lambda p: prep.to_array(load_image(p, min_side=None)),
        f"draft {prep.resize_size}": lambda p: prep.to_array(load_image(p, min_side=prep.resize_size)),
        "naive PIL+timm": lambda p: transform(Image.open(p).convert("RGB")).numpy(),
    }
    seconds = {}
    for name, fn in variants.items():
        seconds[name] = best_pass(fn, paths, repeats)  # items are paths here, not batches
    a = variants["full decode"](paths[0])
    b = variants[f"draft {prep.resize_size}"](paths[0])
    print()
    print(f"decode+preprocess: first {len(paths)} sorted flowers17 JPEGs -> {prep.size} px, best of {repeats}; "
          f"shorter sides {min(min(s) for s in sizes)}..{max(min(s) for s in sizes)} px; "
          f"{shrinkable}/{len(paths)} images have shorter side >= {2 * prep.resize_size} "
          f"(needed for draft to decode at 1/2 scale or less); "
          f"max |draft - full| on image 0 = {float(np.abs(a - b).max()):.3f}")
    print(f"{'variant':<16} {'s':>7} {'ms/img':>7} {'img/s':>7}")
    for name, s in seconds.items():
        print(f"{name:<16} {s:>7.2f} {1000 * s / len(paths):>7.2f} {len(paths) / s:>7.1f}")
    full, draft = seconds["full decode"], seconds[f"draft {prep.resize_size}"]
    print(f"ratio draft / full decode time = {draft / full:.3f} (speed-up {full / draft:.2f}x)")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--decode", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    print(f"os.cpu_count() {os.cpu_count()}, load average {os.getloadavg()[0]:.2f}")
    other_cpu(engines, args.images, args.batch, args.repeats)
    other_cpu(decoding, args.decode, args.repeats)
    return 0


if __name__ == "__main__":
    sys.exit(main())
