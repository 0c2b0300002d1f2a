"""Predicting a very large folder on Ray Data (issue 29): :meth:`Predictor.predict_paths
<graft.inference.predictor.Predictor.predict_paths>`'s contract with the work spread over Ray actors.

Each of ``workers`` actors loads the run's current ``model.onnx`` once, as a
:class:`~graft.inference.predictor.Predictor` with one single-threaded ONNX Runtime session, and
decodes its own batches by graft's rules, so only paths travel to the actors and probabilities
back. Rows carry their position in the input, so the shards merge into one
:class:`~graft.inference.predictor.Batch` in the order given, with the skipped files in that
order too: ``graft predict --ray N`` prints what one process prints. Where the actors run is
:func:`graft._io.ray_cluster.ray_started`'s choice (the cluster at ``RAY_ADDRESS``, else a local
one of ``workers`` CPUs); on a cluster the run folder and the images must be readable at the same
paths on every node.
"""
from __future__ import annotations

import numpy as np

from graft.errors import ImageDecodeError
from graft.inference.predictor import Batch, Predictor


class _PredictWorker:
    """One Ray actor: the run's predictor (its current model.onnx, one thread), kept between batches."""

    def __init__(self, run_dir: str, tta: str | None):
        self.predictor = Predictor.load(run_dir, threads=1, export=False)  # the driver exported it
        self.tta = tta

    def __call__(self, batch: dict) -> dict:
        rows, reasons = [], []
        for path in batch["path"]:
            try:
                rows.append(self.predictor.decode(str(path)))
                reasons.append("")
            except ImageDecodeError as exc:
                reasons.append(exc.reason)
        n, ok = len(reasons), np.array([not r for r in reasons], dtype=bool)
        probabilities = np.zeros((n, len(self.predictor.classes)), np.float32)
        novelty, unfamiliar = np.full(n, np.nan), np.zeros(n, bool)  # float64: what Novelty.judge gives
        if rows:
            found, found_novelty, found_unfamiliar = self.predictor.run(np.stack(rows), self.tta)
            probabilities[ok] = found
            if found_novelty is not None:
                novelty[ok], unfamiliar[ok] = found_novelty, found_unfamiliar
        return {"position": np.asarray(batch["position"]), "probabilities": probabilities, "novelty": novelty,
                "unfamiliar": unfamiliar, "reason": np.array(reasons, dtype=object)}


def predict_on_ray(predictor: Predictor, paths, workers: int, tta: str | None = None, batch_size: int = 32,
                   strict: bool = False, progress: bool = False) -> Batch:
    """``predictor.predict_paths(paths, tta, batch_size, strict, progress)`` on ``workers`` Ray
    actors: the same :class:`~graft.inference.predictor.Batch` (paths that decoded, in the order
    given; probabilities (N, C); novelty and unfamiliar (N,) or None; skipped files in order).

    ``predictor`` must run on ONNX Runtime (its run's current model.onnx is what the actors load).
    ``strict``: the first unreadable file the actors report is raised, an
    :class:`~graft.errors.ImageDecodeError`. Raises :class:`~graft.errors.GraftError` naming the
    extra when Ray Data is not installed."""
    from graft._io.ray_cluster import on_actors
    from graft.inference.predictor import _progress

    paths = [str(p) for p in paths]
    n = len(paths)
    probabilities = np.zeros((n, len(predictor.classes)), np.float32)
    novelty, unfamiliar, reasons = np.zeros(n), np.zeros(n, bool), [""] * n
    bar = _progress(n, progress and n > batch_size)
    try:
        for shard in on_actors(_PredictWorker, (str(predictor.model_dir), tta), paths, batch_size, workers):
            positions = shard["position"].astype(int)
            probabilities[positions] = shard["probabilities"]
            novelty[positions], unfamiliar[positions] = shard["novelty"], shard["unfamiliar"]
            for position, reason in zip(positions, shard["reason"]):
                if reason and strict:
                    raise ImageDecodeError(paths[position], str(reason))
                reasons[position] = str(reason)
            bar.update(len(positions))
    finally:
        bar.close()
    ok = np.array([not r for r in reasons], dtype=bool)
    has_novelty = predictor.novelty is not None
    return Batch([p for p, good in zip(paths, ok) if good], probabilities[ok], novelty[ok] if has_novelty else None,
                 unfamiliar[ok] if has_novelty else None,
                 [{"path": p, "reason": r} for p, r in zip(paths, reasons) if r])
