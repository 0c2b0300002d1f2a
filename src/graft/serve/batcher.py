"""Dynamic batching: concurrent requests share one ONNX Runtime call.

A request hands its decoded input rows to :meth:`DynamicBatcher.submit` and awaits its own
answer. One worker task takes the first waiting request, keeps gathering more until the batch
holds ``max_batch`` images or ``max_wait_s`` has passed since that first one, runs the whole
batch once (in a worker thread, so the event loop keeps accepting requests meanwhile), and
hands each request back its own rows. While a batch runs, new requests queue up and form the
next one: under load batches fill by themselves, when idle a request waits at most
``max_wait_s``. The same idea as Triton's and TorchServe's dynamic batching.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import time
from dataclasses import dataclass

import numpy as np

from graft.serve.settings import ServeSettings


@dataclass
class _Job:
    rows: np.ndarray
    tta: str | None
    future: asyncio.Future


class DynamicBatcher:
    """Gathers requests for one predictor (see the module docstring).

    ``predictor.run(rows, tta) -> (probabilities, novelty | None, unfamiliar | None)`` is called
    with up to ``max_batch`` rows (a single request larger than that runs alone).
    ``batches`` counts the runs and ``images`` the rows, for tests and benchmarks.
    """

    def __init__(self, predictor, max_batch: int = ServeSettings.max_batch,
                 max_wait_s: float = ServeSettings.max_wait_ms / 1000):  # graft serve's defaults
        self.predictor = predictor
        self.max_batch = max(1, int(max_batch))
        self.max_wait_s = max(0.0, float(max_wait_s))
        self.batches = 0
        self.images = 0
        self._queue: asyncio.Queue | None = None
        self._carry: _Job | None = None  # a request that did not fit the last batch: leads the next
        self._worker: asyncio.Task | None = None
        # one thread: ONNX Runtime parallelises inside a run; two runs at once would only contend
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="graft-batch")

    def start(self) -> None:
        """Start the worker on the running event loop (the app's startup)."""
        self._queue = asyncio.Queue()
        self._worker = asyncio.get_running_loop().create_task(self._work())

    async def stop(self) -> None:
        """Cancel the worker and fail what is still waiting (the app's shutdown)."""
        if self._worker is not None:
            self._worker.cancel()
            try:
                await self._worker
            except asyncio.CancelledError:
                pass
        while self._queue is not None and not self._queue.empty():
            job = self._queue.get_nowait()
            if not job.future.done():
                job.future.set_exception(RuntimeError("the server is shutting down"))
        self._pool.shutdown(wait=True)

    async def submit(self, rows: np.ndarray, tta: str | None = None):
        """Answer for these rows: (probabilities (n, C), novelty (n,) | None, unfamiliar (n,) | None)."""
        if self._queue is None:
            raise RuntimeError("the batcher is not started")
        future = asyncio.get_running_loop().create_future()
        await self._queue.put(_Job(rows, tta, future))
        return await future

    async def _gather(self) -> list[_Job]:
        first, self._carry = (self._carry, None) if self._carry is not None else (await self._queue.get(), None)
        jobs = [first]
        count = len(jobs[0].rows)
        deadline = time.monotonic() + self.max_wait_s
        while count < self.max_batch:
            try:
                job = self._queue.get_nowait()
            except asyncio.QueueEmpty:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                try:
                    job = await asyncio.wait_for(self._queue.get(), left)
                except asyncio.TimeoutError:
                    break
            if count + len(job.rows) > self.max_batch:
                self._carry = job  # too big for this batch: it leads the next one
                break
            jobs.append(job)
            count += len(job.rows)
        return jobs

    async def _work(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            jobs = await self._gather()
            for tta in {job.tta for job in jobs}:
                group = [job for job in jobs if job.tta == tta and not job.future.cancelled()]
                if group:
                    await self._run(loop, group, tta)

    async def _run(self, loop, group: list[_Job], tta) -> None:
        rows = np.concatenate([job.rows for job in group])
        try:
            probabilities, novelty, unfamiliar = await loop.run_in_executor(
                self._pool, self.predictor.run, rows, tta)
        except Exception as exc:  # answered to each waiting request; the worker keeps serving
            for job in group:
                if not job.future.done():
                    job.future.set_exception(exc)
            return
        self.batches += 1
        self.images += len(rows)
        start = 0
        for job in group:
            stop = start + len(job.rows)
            if not job.future.done():
                job.future.set_result((probabilities[start:stop],
                                       None if novelty is None else novelty[start:stop],
                                       None if unfamiliar is None else unfamiliar[start:stop]))
            start = stop
