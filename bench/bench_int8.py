"""int8 static quantisation of the frozen network (issue #12): does it keep the accuracy, and
how much faster is it than fp32 in ONNX Runtime?

lite0's ONNX export is quantised with ONNX Runtime (QDQ, per-channel int8 weights, uint8
activations, percentile 99.99 calibration) twice: calibrated on 240 training images of
flowers17 and hymenoptera, and calibrated on 120 crops of scikit-learn's two sample photos
(a dataset-independent calibration). Each network's features feed graft's logreg head on
flowers17 (25 % split, seed 0), hymenoptera (val folder), mnist-2000 and usps-1800 (25 %
splits, seed 0). Speed: CPU time per image of each network alone, one thread, batches of 32,
in this run; the ratio is against fp32.

    python bench/bench_int8.py          # about 15 minutes on 2 cores
"""
from __future__ import annotations

import argparse
import hashlib
import os
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

DATASETS = Path(__file__).resolve().parents[2] / "shared" / "datasets"


def calibration_crops(preprocessing, rng) -> np.ndarray:
    from PIL import Image
    from sklearn.datasets import load_sample_images

    crops = []
    for photo in load_sample_images().images:
        image = Image.fromarray(photo)
        for scale in (1.0, 0.8, 0.6, 0.45, 0.35):
            side = int(min(image.size) * scale)
            for k in range(12):
                x, y = int(rng.integers(0, image.size[0] - side + 1)), int(rng.integers(0, image.size[1] - side + 1))
                crop = image.crop((x, y, x + side, y + side)).resize((preprocessing.size,) * 2, Image.BICUBIC)
                crops.append(preprocessing.normalize(crop.transpose(Image.FLIP_LEFT_RIGHT) if k % 2 else crop))
    return np.stack(crops)


def quantize(fp32: Path, calibration: np.ndarray, out: Path, input_name: str) -> Path:
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Batches(CalibrationDataReader):
        def __init__(self):
            self.batches = iter(calibration[i:i + 8] for i in range(0, len(calibration), 8))

        def get_next(self):
            batch = next(self.batches, None)
            return None if batch is None else {input_name: batch}

    prepared = out.with_suffix(".pre.onnx")
    quant_pre_process(str(fp32), str(prepared))
    quantize_static(str(prepared), str(out), Batches(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    calibrate_method=CalibrationMethod.Percentile, extra_options={"CalibPercentile": 99.99})
    return out


def main() -> None:
    argparse.ArgumentParser(description=__doc__).parse_args()
    os.environ["GRAFT_CACHE_DIR"] = tempfile.mkdtemp(prefix="bench-int8-")
    from graft._io.onnx import OnnxRunner
    from graft.data.folders import load_image, load_train_val
    from graft.features.extractor import FeatureExtractor
    from graft.heads.classical import fit_head

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        splits = {"flowers17": load_train_val(DATASETS / "flowers17", val_fraction=0.25, seed=0),
                  "hymenoptera": load_train_val(DATASETS / "hymenoptera" / "train",
                                                val_dir=DATASETS / "hymenoptera" / "val"),
                  "mnist-2000": load_train_val(DATASETS / "digits" / "mnist-2000", val_fraction=0.25, seed=0),
                  "usps-1800": load_train_val(DATASETS / "digits" / "usps-1800", val_fraction=0.25, seed=0)}
    extractor = FeatureExtractor("tf_efficientnet_lite0", cache=False, processes=0).fit()
    extractor.extract(splits["hymenoptera"][0].paths[:2])  # writes the fp32 ONNX export
    preprocessing, fp32 = extractor.preprocessing_, Path(extractor._onnx_path_)
    images = {name: [np.stack([preprocessing.to_array(load_image(p, min_side=preprocessing.resize_size))
                               for p in folder.paths]) for folder in pair] for name, pair in splits.items()}
    rng = np.random.default_rng(0)
    input_name = OnnxRunner(fp32, threads=1).input_name
    from_training = np.concatenate([images[n][0][rng.permutation(len(images[n][0]))[:120]]
                                    for n in ("flowers17", "hymenoptera")])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        networks = {"fp32": fp32,
                    "int8, calibrated on training images": quantize(fp32, from_training, fp32.with_name("a.onnx"),
                                                                    input_name),
                    "int8, calibrated on sample photos": quantize(fp32, calibration_crops(preprocessing, rng),
                                                                  fp32.with_name("b.onnx"), input_name)}
    print("sha256:", {name: hashlib.sha256(path.read_bytes()).hexdigest()[:12] for name, path in networks.items()})
    reference, fp32_ms = None, None
    for name, path in networks.items():
        runner = OnnxRunner(path, threads=1)
        runner(images["flowers17"][0][:32])
        started = time.process_time()
        vectors = {n: [np.concatenate([runner(a[i:i + 32]) for i in range(0, len(a), 32)]) for a in pair]
                   for n, pair in images.items()}
        ms = (time.process_time() - started) / sum(len(a) for pair in images.values() for a in pair) * 1e3
        fp32_ms = fp32_ms or ms
        reference = reference or vectors
        cosine = np.mean([np.mean(np.sum(a * b, 1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1))
                          for n in vectors for a, b in zip(vectors[n], reference[n])])
        cells = []
        for n, (train, val) in splits.items():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                head = fit_head("logreg", vectors[n][0], train.labels, len(train.classes), 0)
            cells.append(f"{n} {(head.probabilities(vectors[n][1]).argmax(1) == val.labels).mean():.4f}")
        print(f"{name:36s} {ms:6.2f} ms CPU/image ({fp32_ms / ms:.2f}x fp32)  cosine {cosine:.3f}  " + "  ".join(cells),
              flush=True)


if __name__ == "__main__":
    main()
