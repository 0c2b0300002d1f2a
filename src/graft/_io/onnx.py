"""ONNX export of graft's networks and ONNX Runtime sessions to run them on the CPU.

On this project's 2-core CPUs ONNX Runtime runs the depthwise EfficientNet-Lite about 2-3x
faster than eager torch (see BENCHMARKS.md), so frozen inference goes through it.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np

# torch is imported by the functions that need it: ONNX Runtime sessions (extraction worker
# processes among them) run without it.


def export_onnx(module, path: Path, image_size: int, output_names: list[str], input_dtype=None,
                channels_last: bool = False) -> Path:
    """Write ``module`` (images -> tensors) as ONNX with a dynamic batch axis, atomically.

    The input is (N, 3, S, S), or (N, S, S, 3) with ``channels_last``, of ``input_dtype``
    (default float32).
    """
    import torch

    from graft._io.files import atomic_path

    input_dtype = input_dtype or torch.float32

    module = module.eval()
    shape = (1, image_size, image_size, 3) if channels_last else (1, 3, image_size, image_size)
    dummy = torch.zeros(shape, dtype=input_dtype)
    with atomic_path(path) as tmp, warnings.catch_warnings(), torch.no_grad():
        # The TorchScript exporter traces timm's "same" padding into static pads at this
        # image size; the newer dynamo exporter is slower and no better for these nets.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module, (dummy,), str(tmp),
            input_names=["images"], output_names=output_names,
            dynamic_axes={"images": {0: "batch"}, **{n: {0: "batch"} for n in output_names}},
            opset_version=17, dynamo=False,
        )
    return Path(path)


def ort_session(path: Path, threads: int | None = None):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or (os.cpu_count() or 1)
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Idle ORT threads otherwise spin and steal the core that is decoding the next batch
    # (about 5 % of extraction wall on 2 cores, bench/bench_engines.py).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


class OnnxRunner:
    """Call an exported network on numpy batches: ``runner(images) -> first output``."""

    name = "onnx"

    def __init__(self, path: Path, threads: int | None = None):
        self.session = ort_session(path, threads)
        self.input_name = self.session.get_inputs()[0].name

    def __call__(self, images: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: images})[0]


class TorchRunner:
    """The same call in eager torch, for when ONNX Runtime is absent or not wanted."""

    name = "torch"

    def __init__(self, module):
        self.module = module.eval()

    def __call__(self, images: np.ndarray) -> np.ndarray:
        import torch

        with torch.inference_mode():
            return self.module(torch.from_numpy(images)).numpy()
