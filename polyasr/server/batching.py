"""Dynamic batching: one worker thread per model owns the model; the HTTP side hands it jobs and
awaits asyncio futures, so the event loop never waits on the model.

A batch is the oldest waiting job plus the jobs behind it with the same decoding options (same
key), up to `max_batch`; the worker waits for company until the oldest job has waited `max_wait`
seconds. A model that batches across inputs (`capabilities.batched_inputs`) decodes the batch in
one `AsrEngine.transcribe_many` call, whose results equal each input's alone; any other model
decodes the batch's jobs one after another. If a batched call fails, each of its jobs is decoded
alone, so one bad input answers with its own error and its neighbours with their results.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from polyasr.options import TranscribeOptions


class QueueFull(Exception):
    """The model's queue holds `max_queue` jobs already."""


class ShuttingDown(Exception):
    """The worker stopped taking jobs."""


@dataclass(eq=False)
class Job:
    """One request's audio on its way through a worker; `future` resolves on `loop` with a
    TranscriptionResult or the exception decoding raised."""

    audio: np.ndarray
    options: TranscribeOptions
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future
    key: str = ""
    arrived: float = field(default_factory=time.monotonic)
    dropped: bool = False  # set by the HTTP side (timeout, client gone): never decoded, never answered

    def __post_init__(self):
        self.key = self.key or repr(self.options)

    def finish(self, result=None, error: BaseException | None = None) -> None:
        try:
            self.loop.call_soon_threadsafe(_settle, self.future, result, error)
        except RuntimeError:  # the loop has closed: nobody is waiting any more
            pass


def _settle(future: asyncio.Future, result, error) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


class ModelWorker:
    """The thread that owns one `AsrEngine`; `submit`, `drop` and `stop` are safe from any thread."""

    def __init__(self, engine, name: str, *, max_batch: int, max_wait: float, max_queue: int, metrics=None):
        self.engine, self.name = engine, name
        self.max_batch, self.max_wait, self.max_queue = max_batch, max_wait, max_queue
        self.metrics = metrics
        self._pending: deque[Job] = deque()
        self._cond = threading.Condition()
        self._stopping = False
        self._thread = threading.Thread(target=self._loop, name=f"polyasr-worker-{name}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def submit(self, job: Job) -> None:
        """Queue `job`; QueueFull when `max_queue` jobs wait already, ShuttingDown after `stop`."""
        with self._cond:
            if self._stopping:
                raise ShuttingDown(self.name)
            if len(self._pending) >= self.max_queue:
                raise QueueFull(self.name)
            self._pending.append(job)
            self._depth_changed()
            self._cond.notify_all()

    def drop(self, job: Job) -> None:
        """Take `job` out: if it still waits it leaves the queue, if its batch is being formed it is
        skipped; a job already inside a model call finishes, and its result is thrown away."""
        with self._cond:
            job.dropped = True
            if job in self._pending:
                self._pending.remove(job)
                self._depth_changed()
            self._cond.notify_all()

    def stop(self, timeout: float | None = None) -> None:
        """Take no more jobs, decode the ones waiting, then end the thread."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread.is_alive():
            self._thread.join(timeout)

    @property
    def depth(self) -> int:
        return len(self._pending)

    def _depth_changed(self) -> None:
        if self.metrics is not None:
            self.metrics.queue_depth.labels(self.name).set(len(self._pending))

    def _loop(self) -> None:
        while (batch := self._next_batch()) is not None:
            self._run(batch)

    def _next_batch(self) -> list[Job] | None:
        """Block until a batch is due: full, or its oldest job has waited max_wait, or stopping.
        None once stopping with nothing left."""
        with self._cond:
            while True:
                if not self._pending:
                    if self._stopping:
                        return None
                    self._cond.wait()
                    continue
                head = self._pending[0]
                batch = [j for j in self._pending if j.key == head.key][: self.max_batch]
                wait = head.arrived + self.max_wait - time.monotonic()
                if len(batch) == self.max_batch or wait <= 0 or self._stopping:
                    for job in batch:
                        self._pending.remove(job)
                    self._depth_changed()
                    return batch
                self._cond.wait(wait)

    def _run(self, batch: list[Job]) -> None:
        jobs = [j for j in batch if not j.dropped]
        if len(jobs) > 1 and self.engine.model.capabilities.batched_inputs:
            try:
                results = self.engine.transcribe_many([j.audio for j in jobs], jobs[0].options)
            except Exception:  # one input's failure must not answer for the others: each alone below
                pass
            else:
                self._observe(len(jobs))
                for job, result in zip(jobs, results, strict=True):
                    job.finish(result)
                return
        for job in jobs:
            if job.dropped:
                continue
            try:
                result = self.engine.transcribe(job.audio, job.options)
            except Exception as e:
                job.finish(error=e)
            else:
                job.finish(result)
            self._observe(1)

    def _observe(self, size: int) -> None:
        if self.metrics is not None:
            self.metrics.batch_size.labels(self.name).observe(size)
