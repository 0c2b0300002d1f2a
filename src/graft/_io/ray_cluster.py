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


def on_actors(worker_class, arguments: tuple, paths: list[str], batch_size: int, workers: int):
    """Ray Data's output batches (numpy dicts, as they finish) of ``workers`` actors of
    ``worker_class(*arguments)`` called on batches of ``{"position", "path"}`` rows, one row per
    path, ``batch_size`` rows at a time, one CPU each.

    On the local cluster graft started, an actor that dies is not restarted (``max_restarts=0``):
    on one machine that is a bug to see, not a lost node to replace, and Ray's restart
    bookkeeping prints an error line per actor class when restarts are on. A cluster joined
    through ``RAY_ADDRESS`` keeps Ray's defaults (restart, retry). Ray 2.60 takes that option only
    through its deprecated ``**ray_remote_args`` (removed in 2.64: the ray extra stays below it)."""
    ray = ray_started(workers)
    dataset = ray.data.from_items([{"position": k, "path": str(p)} for k, p in enumerate(paths)],
                                  override_num_blocks=block_count(len(paths), batch_size, workers))
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="`ray_remote_args` is deprecated")
        mapped = dataset.map_batches(worker_class, fn_constructor_args=arguments, batch_size=batch_size,
                                     compute=ray.data.ActorPoolStrategy(size=workers), num_cpus=1,
                                     batch_format="numpy", **({"max_restarts": 0} if _started_here else {}))
    return mapped.iter_batches(batch_size=None, batch_format="numpy")


def block_count(n_items: int, batch_size: int, workers: int) -> int:
    """Blocks to cut ``n_items`` rows into: a few per worker, so a slow worker does not hold the
    end of the run; none smaller than one batch unless that leaves a worker idle."""
    return max(1, min(n_items, max(workers, min(n_items // max(batch_size, 1), 8 * workers))))
