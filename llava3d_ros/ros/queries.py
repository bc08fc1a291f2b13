"""A bounded query queue with one worker thread: BUSY at once when full, cancel, timeouts.

The model runs one query at a time on the worker; ROS callbacks only submit and wait on a
completion callback, so no executor thread ever blocks on the model.
"""

from __future__ import annotations

import collections
import itertools
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from llava3d_ros.answer import AnswerResult, ResultCode
from llava3d_ros.ros.request import QueryRequest
from llava3d_ros.ros.threads import named_thread

StageCallback = Callable[[str], None]
TokenCallback = Callable[[str, int], None]


@dataclass(eq=False)
class Job:
    """One accepted query: the request, its cancel flag, progress hooks and completion callback.

    ``on_done`` is called exactly once with the final result, from whichever thread finished
    the job (worker, canceller or timeout timer).
    """

    request: QueryRequest
    on_done: Callable[[AnswerResult], None]
    on_stage: StageCallback | None = None
    on_token: TokenCallback | None = None
    cancel: threading.Event = field(default_factory=threading.Event)
    id: int = field(default_factory=itertools.count(1).__next__)
    submitted: float = field(default_factory=time.monotonic)
    timed_out: bool = False
    _finished: bool = False


class QueryQueue:
    """At most ``max_pending`` jobs wait; one runs. ``run(job)`` computes a job's result."""

    def __init__(
        self,
        run: Callable[[Job], AnswerResult],
        max_pending: int,
        timeout_s: float = 0.0,
        name: str = "llava3d-query",
    ) -> None:
        if max_pending < 0:
            raise ValueError(f"max_pending must be >= 0, got {max_pending}")
        if timeout_s < 0:
            raise ValueError(f"timeout_s must be >= 0, got {timeout_s}")
        self._run = run
        self.max_pending = max_pending
        self.timeout_s = timeout_s
        self._lock = threading.Condition()
        self._waiting: collections.deque[Job] = collections.deque()
        self._running: Job | None = None
        self._stopping = False
        self._timers: dict[int, threading.Timer] = {}
        self.completed = 0
        self.rejected = 0
        self.last_latency_s = 0.0
        self._worker = named_thread(self._loop, name)
        self._worker.start()

    @property
    def pending(self) -> int:
        """Jobs waiting (not counting the one running)."""
        with self._lock:
            return len(self._waiting)

    @property
    def busy(self) -> bool:
        with self._lock:
            return self._running is not None

    def submit(self, job: Job) -> bool:
        """Queue ``job``; False (and nothing else happens) when the queue is full or stopping."""
        with self._lock:
            in_system = len(self._waiting) + (self._running is not None)
            if self._stopping or in_system > self.max_pending:
                self.rejected += 1
                return False
            self._waiting.append(job)
            if self.timeout_s > 0:
                timer = threading.Timer(self.timeout_s, self._expire, args=(job,))
                timer.daemon = True
                self._timers[job.id] = timer
                timer.start()
            self._lock.notify_all()
        if job.on_stage is not None:
            job.on_stage("queued")
        return True

    def cancel(self, job: Job, code: ResultCode = ResultCode.CANCELED, message: str = "") -> None:
        """Cancel ``job``: a waiting job finishes at once, a running one is asked to stop."""
        with self._lock:
            queued = job in self._waiting
            if queued:
                self._waiting.remove(job)
            job.cancel.set()
        if queued:
            self._finish(job, AnswerResult(code=code, message=message or "canceled while queued"))

    def stop(self, message: str = "node is shutting down", timeout_s: float = 10.0) -> None:
        """Refuse new jobs, answer waiting ones NOT_READY, cancel the running one, join the worker."""
        with self._lock:
            self._stopping = True
            waiting = list(self._waiting)
            self._waiting.clear()
            running = self._running
            self._lock.notify_all()
        for job in waiting:
            job.cancel.set()
            self._finish(job, AnswerResult(code=ResultCode.NOT_READY, message=message))
        if running is not None:
            running.cancel.set()
        self._worker.join(timeout_s)

    def _expire(self, job: Job) -> None:
        job.timed_out = True
        self.cancel(job, ResultCode.TIMEOUT, f"query timed out after {self.timeout_s:.3g} s")

    def _finish(self, job: Job, result: AnswerResult) -> None:
        with self._lock:
            if job._finished:
                return
            job._finished = True
            timer = self._timers.pop(job.id, None)
            self.completed += 1
            self.last_latency_s = time.monotonic() - job.submitted
        if timer is not None:
            timer.cancel()
        if job.timed_out and result.code == ResultCode.CANCELED:
            result.code = ResultCode.TIMEOUT
            result.message = f"query timed out after {self.timeout_s:.3g} s"
        job.on_done(result)

    def _loop(self) -> None:
        while True:
            with self._lock:
                while not self._waiting and not self._stopping:
                    self._lock.wait()
                if self._stopping:
                    return
                job = self._waiting.popleft()
                self._running = job
            try:
                if job.cancel.is_set():
                    result = AnswerResult(code=ResultCode.CANCELED, message="canceled")
                else:
                    result = self._run(job)
            except Exception as exc:  # the node must keep serving after any failure
                result = AnswerResult(
                    code=ResultCode.MODEL_ERROR, message=f"{type(exc).__name__}: {exc}"
                )
            finally:
                with self._lock:
                    self._running = None
            self._finish(job, result)
