"""Where graft's Ray work runs (issue 29): the one place that joins or starts a Ray cluster, for
frozen extraction (:mod:`graft.features.ray_workers`) and prediction (:mod:`graft.inference.on_ray`).

* ``RAY_ADDRESS`` set (``head-node:6379``, ``auto`` for a cluster ``ray start`` began on this
  machine; a Ray job sets it for its driver): that cluster, all its nodes.
* ``ray.init(...)`` already called by the caller: that session, as it is.
* neither: a new local cluster of ``workers`` CPUs on this machine, shut down when the process
  ends (``address="local"``, so a cluster left running here is not joined by accident).
"""
from __future__ import annotations

import logging
import os
import warnings

from graft.errors import GraftError

EXTRA = "pip install 'graft-vision[ray]'"
_started_here: list = []  # the local clusters this process started (at most one at a time)


def ray_started(workers: int):
    """The ``ray`` module, initialised as the module docstring says, with Ray Data's progress
    bars and its lines on the console off (graft shows one bar of its own and its own warnings;
    Ray Data's log file in the session folder keeps everything).

    Raises :class:`~graft.errors.GraftError` naming the extra when Ray Data is not installed."""
    try:
        import ray
        import ray.data
    except ImportError:
        raise GraftError(f"running on Ray needs Ray Data: {EXTRA}") from None
    if not ray.is_initialized():
        quiet = {"log_to_driver": False, "logging_level": "ERROR"}
        if os.environ.get("RAY_ADDRESS"):
            try:
                ray.init(**quiet)  # joins it: its nodes' CPUs count, not ``workers``
            except Exception as exc:  # unreachable, refused (a token missing): Ray's own reason, one line
                reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                raise GraftError(f"cannot join the Ray cluster at RAY_ADDRESS={os.environ['RAY_ADDRESS']}: {reason} "
                                 "(a cluster begun by `ray start` wants RAY_AUTH_MODE=token and its token)") from None
            _started_here.clear()
        else:
            _started_here[:] = [ray.init(address="local", num_cpus=workers, include_dashboard=False, **quiet)]
    for handler in logging.getLogger("ray.data").handlers:
        if handler.name == "console":  # Ray Data's logging config names its stderr handler so
            handler.setLevel(logging.ERROR)
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    context.print_on_execution_start = False
    return ray


class _Batches:
    """The actor Ray Data runs: ``worker_class(*arguments)``, called once per batch of paths.

    Ray Data's rows are whole batches (``start``, and the batch's paths joined by NUL, which no
    POSIX path holds), not single paths: Ray cuts its own batches at its block boundaries, so
    batches of single paths came out shorter there (17 rows at the end of each 625-row block), and
    a model's outputs for an image can depend, in the last bits, on which images share its batch
    (novelty moved in the 4th decimal on 41 of 10000 digits, BENCHMARKS.md). Whole batches are the
    ones one process runs, for every folder without an unreadable file."""

    def __init__(self, worker_class, arguments: tuple):
        self.worker = worker_class(*arguments)

    def __call__(self, batch: dict) -> dict:
        import numpy as np

        parts = []
        for start, joined in zip(batch["start"], batch["paths"]):
            names = str(joined).split("\0")
            parts.append(self.worker({"position": np.arange(int(start), int(start) + len(names)),
                                      "path": np.array(names, dtype=object)}))
        return {key: np.concatenate([part[key] for part in parts]) for key in parts[0]}


def on_actors(worker_class, arguments: tuple, paths: list[str], batch_size: int, workers: int):
    """Ray Data's output batches (numpy dicts, as they finish) of ``workers`` actors of
    ``worker_class(*arguments)``, each called on ``{"position": (n,), "path": (n,)}``: the
    positions in ``paths`` and the paths of one batch of ``batch_size`` (the last one shorter), the
    batches one process would cut; one CPU per actor.

    On the local cluster graft started, an actor that dies is not restarted (``max_restarts=0``):
    on one machine that is a bug to see, not a lost node to replace, and Ray's restart
    bookkeeping prints an error line per actor class when restarts are on. A cluster joined
    through ``RAY_ADDRESS`` keeps Ray's defaults (restart, retry). Ray 2.60 takes that option only
    through its deprecated ``**ray_remote_args`` (removed in 2.64: the ray extra stays below it)."""
    ray = ray_started(workers)
    batches = [{"start": k, "paths": "\0".join(str(p) for p in paths[k:k + batch_size])}
               for k in range(0, len(paths), batch_size)]
    dataset = ray.data.from_items(batches, override_num_blocks=block_count(len(batches), 1, workers))
    actor = type(f"{worker_class.__name__}Batches", (_Batches,), {})  # Ray names the actors by it
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="`ray_remote_args` is deprecated")
        mapped = dataset.map_batches(actor, fn_constructor_args=(worker_class, arguments), batch_size=1,
                                     compute=ray.data.ActorPoolStrategy(size=workers), num_cpus=1,
                                     batch_format="numpy", runtime_env=_local_threads(),
                                     **({"max_restarts": 0} if _started_here else {}))
    return mapped.iter_batches(batch_size=None, batch_format="numpy")


def _local_threads() -> dict | None:
    """On the local cluster graft started, the actors' BLAS threads are this process's: Ray sets
    OMP_NUM_THREADS=1 in an actor of one CPU, and numpy's matrix products (a model's novelty
    score) then differ in the last bits from one process's (up to 1.4e-5 on MNIST digits, enough to
    move a printed 4th decimal). On a joined cluster the nodes' own settings stand."""
    if not _started_here:
        return None
    return {"env_vars": {name: os.environ.get(name) or str(os.cpu_count() or 1)
                         for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS")}}


def block_count(n_items: int, batch_size: int, workers: int) -> int:
    """Blocks to cut ``n_items`` rows into: a few per worker, so a slow worker does not hold the
    end of the run; none smaller than one batch unless that leaves a worker idle."""
    return max(1, min(n_items, max(workers, min(n_items // max(batch_size, 1), 8 * workers))))
