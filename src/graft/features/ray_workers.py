"""Frozen extraction on Ray Data (issue 29): the contract of :func:`graft.features.workers.extract_in_processes`
with the workers on a Ray cluster instead of forked processes of this machine.

Each of ``workers`` Ray actors holds one single-threaded ONNX Runtime session of the feature
network and decodes its batches itself (graft's own decode and preprocessing), so only paths
travel to the workers and vectors back. Rows carry their position in ``paths``, so the chunks
merge into the same arrays, in the same order, whatever order the workers finish in. Where
the actors run is :func:`graft._io.ray_cluster.ray_started`'s choice: the cluster at
``RAY_ADDRESS`` (or the one ``ray.init`` joined), else a local one of ``workers`` CPUs; on a
cluster the ONNX file and the images must be readable at the same paths on every node.

``FeatureExtractor(processes="ray:N")`` and ``graft extract --ray N`` call it; measured by
``bench/bench_ray_extract.py``.
"""
from __future__ import annotations

import numpy as np


class _Worker:
    """One Ray actor: a session of ``onnx_path`` and the preprocessing, kept between batches."""

    def __init__(self, onnx_path: str, preprocessing: dict, flip: bool, output: str | None):
        from graft._io.onnx import ort_session
        from graft.data.preprocess import Preprocessing

        self.session = ort_session(onnx_path, threads=1)
        self.input = self.session.get_inputs()[0].name
        self.output = output or self.session.get_outputs()[0].name
        self.prep = Preprocessing.from_dict(preprocessing)
        self.flip = flip

    def __call__(self, batch: dict) -> dict:
        from graft.data.decode import load_image
        from graft.errors import ImageDecodeError

        arrays, reasons = [], []
        for path in batch["path"]:
            try:
                array = self.prep.to_array(load_image(str(path), min_side=self.prep.resize_size))
                arrays.append(np.ascontiguousarray(array[:, :, ::-1]) if self.flip else array)
                reasons.append("")
            except ImageDecodeError as exc:
                reasons.append(exc.reason)
        vectors = self.session.run([self.output], {self.input: np.stack(arrays)})[0] if arrays else None
        width = vectors.shape[1] if vectors is not None else 0
        rows = np.zeros((len(reasons), width), np.float32)
        ok = np.array([not r for r in reasons])
        if vectors is not None:
            rows[ok] = vectors
        return {"position": np.asarray(batch["position"]), "vector": rows, "reason": np.array(reasons, dtype=object)}


def extract_on_ray(onnx_path, preprocessing: dict, flip: bool, paths: list[str], batch_size: int, workers: int,
                   output: str | None = None):
    """Yield ``(positions, vectors, [(position, reason)])`` chunks for ``paths`` (as
    :func:`graft.features.workers.extract_in_processes`): ``vectors`` (n, D) float32 of the
    network's ``output`` (default its first), one row per position read; positions index
    ``paths``. Raises :class:`~graft.errors.GraftError` naming the extra when Ray Data is not
    installed."""
    from graft._io.ray_cluster import on_actors

    for batch in on_actors(_Worker, (str(onnx_path), preprocessing, flip, output), paths, batch_size, workers):
        reasons = batch["reason"]
        ok = np.array([not r for r in reasons], dtype=bool)
        positions = batch["position"]
        failures = [(int(p), str(r)) for p, r in zip(positions[~ok], reasons[~ok])]
        yield [int(p) for p in positions[ok]], np.asarray(batch["vector"][ok], np.float32), failures
