"""Heavy work off the event loop: a bounded pool of threads, and jobs that report progress.

Every request that computes (segmentation, scoring, decoding, prediction) runs on
``Limits.workers`` threads; while they are busy further requests wait in line, and past
``Limits.max_queue`` waiting ones the server answers 503 at once rather than hold their
memory. A prediction is a job: the request returns its id, the page polls its progress.
"""

from __future__ import annotations

import asyncio
import secrets
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from typing import Any

__all__ = ["Busy", "Job", "JobBoard", "WorkPool"]


class Busy(RuntimeError):
    """Too many requests already wait for a worker."""


class WorkPool:
    """A fixed number of worker threads and a bounded line of work waiting for them.

    Parameters
    ----------
    workers : int
        Threads.
    max_queue : int
        Most tasks waiting beyond those running.
    """

    def __init__(self, workers: int, max_queue: int) -> None:
        self.workers, self.max_queue = workers, max_queue
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="segloc-work")
        self._pending = 0
        self._lock = threading.Lock()

    @property
    def pending(self) -> int:
        """Tasks running or waiting."""
        return self._pending

    def submit(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Future:
        """Queue ``fn(*args, **kwargs)``. Raises :class:`Busy` when the line is full."""
        with self._lock:
            if self._pending >= self.workers + self.max_queue:
                raise Busy(f"server busy ({self._pending} tasks in line); try again shortly")
            self._pending += 1
        try:
            future = self._executor.submit(fn, *args, **kwargs)
        except BaseException:
            self._done(None)
            raise
        future.add_done_callback(self._done)
        return future

    def _done(self, _: Future | None) -> None:
        with self._lock:
            self._pending -= 1

    async def run(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run ``fn`` on a worker and await its result (exceptions propagate)."""
        return await asyncio.wrap_future(self.submit(partial(fn, *args, **kwargs)))

    def shutdown(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


@dataclass
class Job:
    """A prediction in progress: ``state`` is queued, running, done or error."""

    id: str
    session: str
    state: str = "queued"
    progress: float = 0.0
    error: str | None = None
    result: dict | None = None
    finished: float | None = None
    started: float = field(default_factory=time.monotonic)


class JobBoard:
    """Jobs by id; finished ones are forgotten ``keep`` seconds after they end."""

    def __init__(self, *, keep: float = 600.0, max_jobs: int = 1000) -> None:
        self.keep, self.max_jobs = keep, max_jobs
        self._jobs: dict[str, Job] = {}
        self._lock = threading.Lock()

    def new(self, session: str) -> Job:
        """Register a job. Raises :class:`Busy` when too many are kept."""
        self._forget_old()
        with self._lock:
            if len(self._jobs) >= self.max_jobs:
                raise Busy("too many jobs; try again shortly")
            job = Job(secrets.token_urlsafe(12), session)
            self._jobs[job.id] = job
        return job

    def get(self, jid: str) -> Job | None:
        return self._jobs.get(jid)

    def _forget_old(self) -> None:
        now = time.monotonic()
        with self._lock:
            for jid in [
                j.id for j in self._jobs.values() if j.finished and now - j.finished > self.keep
            ]:
                del self._jobs[jid]
