"""Cold extraction across processes, to keep every core busy all the time.

In one process, decoding (PIL, in a thread) and ONNX Runtime (its own threads) take turns on
the cores, and neither side is busy all the time. Here each of ``processes`` forked workers
decodes its share of images and runs them through its own single-threaded ONNX Runtime
session, with no hand-over between them; the parent only stores the vectors and moves the
progress bar. Starting the workers and their sessions costs a fraction of a second, so this
is used from a few hundred images on (``MIN_IMAGES``). ``bench/bench_extraction_bound.py`` measures it
against the machine's bound.
"""
from __future__ import annotations

import os

import numpy as np

MIN_IMAGES = 256  # below this the workers' start-up costs more than it saves

_worker: dict = {}


def process_count(n_images: int, requested) -> int:
    """How many worker processes to use for ``n_images``: 0 means extract in this process.
    ``requested`` is "auto" (one per core, from MIN_IMAGES images on) or a number."""
    if requested in (0, 1, "0", "1", False, None) or os.environ.get("GRAFT_EXTRACT_PROCESSES") == "0":
        return 0
    import multiprocessing

    if "fork" not in multiprocessing.get_all_start_methods():  # Windows: extract in this process
        return 0
    if requested != "auto":
        return int(requested) if int(requested) >= 2 and n_images > 0 else 0
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return cores if cores >= 2 and n_images >= MIN_IMAGES else 0


def _start(onnx_path: str, preprocessing: dict, flip: bool) -> None:
    from graft._io.onnx import OnnxRunner
    from graft.data.preprocess import Preprocessing

    _worker["runner"] = OnnxRunner(onnx_path, threads=1)
    _worker["preprocessing"] = Preprocessing.from_dict(preprocessing)
    _worker["flip"] = flip


def _extract(paths: list[str]) -> tuple[np.ndarray, list[int], list[tuple[int, str]]]:
    """(vectors, the positions in ``paths`` they belong to, [(position, reason)] of failures)."""
    from graft.data.folders import load_image
    from graft.errors import ImageDecodeError

    prep, arrays, kept, failed = _worker["preprocessing"], [], [], []
    for position, path in enumerate(paths):
        try:
            array = prep.to_array(load_image(path, min_side=prep.resize_size))
        except ImageDecodeError as exc:
            failed.append((position, exc.reason))
            continue
        arrays.append(np.ascontiguousarray(array[:, :, ::-1]) if _worker["flip"] else array)
        kept.append(position)
    vectors = _worker["runner"](np.stack(arrays)) if arrays else np.zeros((0, 0), np.float32)
    return np.asarray(vectors, dtype=np.float32), kept, failed


def extract_in_processes(onnx_path, preprocessing: dict, flip: bool, paths: list[str], chunk: int,
                         processes: int):
    """Yield ``(positions, vectors, failures)`` per chunk of ``paths``, in order."""
    import concurrent.futures
    import multiprocessing

    chunks = [list(range(i, min(i + chunk, len(paths)))) for i in range(0, len(paths), chunk)]
    # fork, not spawn: spawn re-imports the caller's main module, which breaks any user script
    # without an ``if __name__ == "__main__"`` guard. The children touch neither torch nor its
    # OpenMP pool (ONNX Runtime has its own threads), so what fork copies of those stays unused.
    context = multiprocessing.get_context("fork")
    with concurrent.futures.ProcessPoolExecutor(processes, mp_context=context, initializer=_start,
                                                initargs=(str(onnx_path), preprocessing, flip)) as pool:
        try:
            results = pool.map(_extract, [[paths[i] for i in positions] for positions in chunks])
            for positions, (vectors, kept, failed) in zip(chunks, results):
                yield ([positions[k] for k in kept], vectors, [(positions[k], reason) for k, reason in failed])
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
