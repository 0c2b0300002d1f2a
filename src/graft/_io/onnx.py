"""ONNX export of graft's networks and ONNX Runtime sessions to run them on the CPU: the one
session factory (:func:`ort_session`) and the one folder for cached graphs (:func:`onnx_cache`)
that feature extraction, export checks and :mod:`graft.inference` share.

On this project's 2-core CPUs ONNX Runtime runs the depthwise EfficientNet-Lite about 2-3x
faster than eager torch (see BENCHMARKS.md), so frozen inference goes through it.
"""
from __future__ import annotations

import hashlib
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


def onnx_cache(*parts: str) -> Path:
    """Where graft keeps ONNX graphs it can rebuild: ``<cache root>/onnx/<parts...>``
    (:func:`graft._io.cache_dir.cache_root`). The feature networks' exports sit at its top,
    models' exports under ``models/``, optimised graphs under ``optimised/``."""
    from graft._io.cache_dir import cache_root

    return cache_root().joinpath("onnx", *parts)


def _session_options(threads: int | None, optimise: bool):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or (os.cpu_count() or 1)
    options.inter_op_num_threads = 1
    # Idle ORT threads otherwise spin and steal the core that is decoding the next batch
    # (about 5 % of extraction wall on 2 cores, bench/bench_engines.py).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3
    options.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimise
                                        else ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
    return options


def ort_session(path: Path, threads: int | None = None, keep_optimised: bool = False):
    """graft's one ONNX Runtime session factory: ``path`` on the CPU, ``threads`` intra-op
    threads (default: every core), idle threads not spinning, full graph optimisation.

    ``keep_optimised``: keep the optimised graph in :func:`onnx_cache` ``("optimised")``, named by
    the file's path, size, mtime, the ORT version and the CPU flags (an optimised graph is only
    valid on such a CPU), and load it as it is next time: ORT's full optimisation (fusions, the
    NCHWc layout for this CPU's vector width) took ~80 ms of a ~0.4 s ``graft predict``. Only
    for files that stay where they are (a run's model.onnx): a temporary file would leave its
    optimised copy behind. A read-only cache optimises every time.
    """
    import onnxruntime as ort

    providers = ["CPUExecutionProvider"]
    if not keep_optimised:
        return ort.InferenceSession(str(path), _session_options(threads, True), providers=providers)
    path = Path(path).resolve()
    info = path.stat()
    folder = onnx_cache("optimised")
    stem = hashlib.sha256(str(path).encode()).hexdigest()[:16]
    key = hashlib.sha256(f"{info.st_size}:{info.st_mtime_ns}:{ort.__version__}:{_cpu_flags()}".encode()).hexdigest()
    kept = folder / f"{stem}-{key[:16]}.onnx"
    if kept.is_file():
        try:
            return ort.InferenceSession(str(kept), _session_options(threads, False), providers=providers)
        except Exception:  # damaged or foreign: optimised again below
            kept.unlink(missing_ok=True)
    options = _session_options(threads, True)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        for old in folder.glob(f"{stem}-*.onnx"):  # an earlier version of this file
            old.unlink(missing_ok=True)
        tmp = folder / f".{kept.name}.{os.getpid()}.tmp"
        options.optimized_model_filepath = str(tmp)
        session = ort.InferenceSession(str(path), options, providers=providers)
        os.replace(tmp, kept)
        return session
    except OSError:  # a read-only cache: optimise every time
        return ort.InferenceSession(str(path), _session_options(threads, True), providers=providers)


def _cpu_flags() -> str:
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith(("flags", "Features")):
                    return hashlib.sha256(line.encode()).hexdigest()[:16]
    except OSError:
        pass
    import platform

    return platform.machine() + platform.processor()


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
