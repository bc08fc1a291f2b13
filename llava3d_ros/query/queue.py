"""A bounded query queue with one worker thread: BUSY at once when full, cancel, timeouts.

The model runs one query at a time on the worker; ROS callbacks only submit and wait on a
completion callback, so no executor thread ever blocks on the model.

Overload is shared fairly between clients (``QueryRequest.client_id``; all anonymous callers,
``""``, are one client), in two parts:

Admission. The queue holds ``capacity = max_pending + 1`` jobs (waiting plus the one running).
While it is not full every job is accepted. When it is full, a job from client C takes the
place of the newest *waiting* job of the client V holding the most jobs (ties: the one whose
waiting job was queued last), provided V holds at least two more than C; the displaced job is
finished at once with ``BUSY`` saying so. Otherwise C's job is refused (``submit`` returns
False). Running jobs are never displaced, and every accepted job gets exactly one ``on_done``.
With ``n`` the number of clients holding jobs, counting C:

- only a client above its fair share ``capacity / n`` ever loses a waiting job (when the queue
  is full, the largest holder, two above C, holds more than ``capacity / n``);
- a refused client is never two jobs behind anyone, so it already holds at least
  ``floor(capacity / n)``; while a client below its fair share is being refused no other
  client holds more than its fair share rounded up to a whole job, ``ceil(capacity / n)``;
- a displacement never leaves C holding more than V, so two clients cannot take the same
  slot back and forth.

Service order. The worker serves the clients with waiting jobs in turn (round robin, each
client's own jobs first come first served): a client whose job arrives while others wait is
served after at most one job of each of them. So a client's share of the answers does not grow
with how many jobs it keeps queued, which whole-job capacity shares alone cannot promise
(5 slots among 4 clients: someone holds 2).
"""

from __future__ import annotations

import collections
import itertools
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from llava3d_ros.answer import AnswerResult, ResultCode
from llava3d_ros.query.request import QueryRequest
from llava3d_ros.threads import named_thread

StageCallback = Callable[[str], None]
TokenCallback = Callable[[str, int], None]


@dataclass(eq=False)
class Job:
    """One accepted query: the request, its cancel flag, progress hooks and completion callback.

    ``on_done`` is called exactly once with the final result, from whichever thread finished
    the job (worker, canceller, timeout timer, or the submitter whose job displaced it).
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
    _queued: int = 0  # the queue's running count at acceptance (newest waiting = largest)

    @property
    def client_id(self) -> str:
        """Who asked ("" = anonymous; all anonymous callers are one client)."""
        return self.request.client_id


class QueryQueue:
    """At most ``max_pending`` jobs wait; one runs. ``run(job)`` computes a job's result.

    Fair between clients under overload (see the module docstring). ``completed`` counts jobs
    finished (displaced ones included), ``rejected`` refusals by ``submit``, ``displaced``
    accepted jobs answered ``BUSY`` because a client below its share took their place.
    """

    def __init__(
        self,
        run: Callable[[Job], AnswerResult],
        max_pending: int,
        timeout_s: float = 0.0,
        name: str = "llava3d-query",
        on_exit: Callable[[BaseException | None], None] | None = None,
        on_done_error: Callable[[BaseException], None] | None = None,
    ) -> None:
        """``on_exit``: how the worker thread ended (see ``threads.named_thread``);
        ``on_done_error``: a job's completion callback raised (the worker goes on)."""
        if max_pending < 0:
            raise ValueError(f"max_pending must be >= 0, got {max_pending}")
        if timeout_s < 0:
            raise ValueError(f"timeout_s must be >= 0, got {timeout_s}")
        self._run = run
        self.max_pending = max_pending
        self.timeout_s = timeout_s
        self._lock = threading.Condition()
        # client_id -> its waiting jobs, oldest first; only clients with some, in serving turn
        self._waiting: collections.OrderedDict[str, collections.deque[Job]] = (
            collections.OrderedDict()
        )
        self._pending = 0
        self._held: dict[str, int] = {}  # client_id -> its jobs waiting or running (> 0 only)
        self._queued = itertools.count(1)
        self._running: Job | None = None
        self._stopping = False
        self._timers: dict[int, threading.Timer] = {}
        self.completed = 0
        self.rejected = 0
        self.displaced = 0
        self.last_latency_s = 0.0
        self._on_done_error = on_done_error
        self._worker = named_thread(self._loop, name, on_exit=on_exit)
        self._worker.start()

    @property
    def pending(self) -> int:
        """Jobs waiting (not counting the one running)."""
        with self._lock:
            return self._pending

    @property
    def busy(self) -> bool:
        with self._lock:
            return self._running is not None

    @property
    def capacity(self) -> int:
        """Jobs the queue holds when full: ``max_pending`` waiting plus the one running."""
        return self.max_pending + 1

    def held(self, client_id: str) -> int:
        """Jobs of ``client_id`` waiting or running ("" = all anonymous callers together)."""
        with self._lock:
            return self._held.get(client_id, 0)

    def submit(self, job: Job) -> bool:
        """Queue ``job``; False (and nothing else happens) when refused.

        Refused when stopping, or when the queue is full and no other client holds two jobs
        more than ``job``'s client. When the queue is full and some client does, the newest
        waiting job of the largest holder is displaced: finished with ``BUSY`` (its
        ``on_done`` called once, from this call) and ``job`` takes its place.
        """
        victim: Job | None = None
        client = job.client_id
        with self._lock:
            if self._stopping:
                self.rejected += 1
                return False
            if self._pending + (self._running is not None) >= self.capacity:
                victim = self._pick_victim(client)
                if victim is None:
                    self.rejected += 1
                    return False
                message = (
                    f"displaced by the fair-share policy: {_who(victim.client_id)} held "
                    f"{self._held[victim.client_id]} of {self.capacity} query slots while "
                    f"{_who(client)} held {self._held.get(client, 0)}; try again later"
                )
                self._unqueue(victim)
                victim.cancel.set()
                self.displaced += 1
            job._queued = next(self._queued)
            if client in self._waiting:
                self._waiting[client].append(job)
            else:
                self._waiting[client] = collections.deque((job,))  # joins the end of the turn
            self._pending += 1
            self._held[client] = self._held.get(client, 0) + 1
            if self.timeout_s > 0:
                timer = threading.Timer(self.timeout_s, self._expire, args=(job,))
                timer.daemon = True
                self._timers[job.id] = timer
                timer.start()
            self._lock.notify_all()
        if victim is not None:
            self._finish(victim, AnswerResult(code=ResultCode.BUSY, message=message))
        if job.on_stage is not None:
            job.on_stage("queued")
        return True

    def refusal_reason(self, client_id: str) -> str:
        """Why a job of ``client_id`` is refused now: the text for its ``BUSY`` answer.

        Call it right after ``submit`` returned False; it describes the queue as it is at the
        call (cheap: one pass over the per-client counts, under the lock).
        """
        with self._lock:
            if self._stopping:
                return "the query queue is shutting down"
            waiting = (
                f"{self._pending} queries are waiting (max_pending_queries={self.max_pending})"
            )
            if self._pending + (self._running is not None) < self.capacity:
                return f"{waiting}; try again later"
            mine = self._held.get(client_id, 0)
            clients = len(self._held) + (client_id not in self._held)
            most = max((n for c, n in self._held.items() if c != client_id), default=0)
            return (
                f"{waiting}; fair-share policy: {_who(client_id)} "
                f"{'holds' if client_id else 'hold'} {mine} of {self.capacity} query slots "
                f"(fair share {self.capacity / clients:.3g} with {clients} clients asking) and "
                f"no other client holds two more (most: {most}); try again later"
            )

    def cancel(self, job: Job, code: ResultCode = ResultCode.CANCELED, message: str = "") -> None:
        """Cancel ``job``: a waiting job finishes at once, a running one is asked to stop."""
        with self._lock:
            queued = job in self._waiting.get(job.client_id, ())
            if queued:
                self._unqueue(job)
            job.cancel.set()
        if queued:
            self._finish(job, AnswerResult(code=code, message=message or "canceled while queued"))

    def stop(self, message: str = "node is shutting down", timeout_s: float = 10.0) -> None:
        """Refuse new jobs, answer waiting ones NOT_READY, cancel the running one, join the worker."""
        with self._lock:
            self._stopping = True
            waiting = sorted(
                (job for jobs in self._waiting.values() for job in jobs), key=lambda j: j._queued
            )
            for job in waiting:
                self._unqueue(job)
            running = self._running
            self._lock.notify_all()
        for job in waiting:
            job.cancel.set()
            self._finish(job, AnswerResult(code=ResultCode.NOT_READY, message=message))
        if running is not None:
            running.cancel.set()
        if threading.current_thread() is not self._worker:  # (the worker stops it as it dies)
            self._worker.join(timeout_s)

    def _release(self, job: Job) -> None:
        """``job`` left the queue (lock held): one less held by its client."""
        left = self._held[job.client_id] - 1
        if left:
            self._held[job.client_id] = left
        else:
            del self._held[job.client_id]

    def _unqueue(self, job: Job) -> None:
        """Take waiting ``job`` out of the queue (lock held)."""
        jobs = self._waiting[job.client_id]
        jobs.remove(job)
        if not jobs:
            del self._waiting[job.client_id]
        self._pending -= 1
        self._release(job)

    def _pick_victim(self, client: str) -> Job | None:
        """The full queue's job that ``client``'s new one may displace, or None (lock held).

        The newest waiting job of the client holding the most, if it holds at least two more
        than ``client``; among equal holders, the one whose waiting job was queued last.
        """
        most = max((n for c, n in self._held.items() if c != client), default=0)
        if most < self._held.get(client, 0) + 2:
            return None
        # holding two or more, a client has a waiting job (only one runs)
        newest = (
            jobs[-1]
            for other, jobs in self._waiting.items()
            if other != client and self._held[other] == most
        )
        return max(newest, key=lambda j: j._queued, default=None)

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
        try:
            job.on_done(result)
        except Exception as exc:  # a caller's callback must never stop the worker
            if self._on_done_error is None:
                raise
            self._on_done_error(exc)

    def _next_job(self) -> Job:
        """The oldest waiting job of the client whose turn it is (lock held, some waiting)."""
        client, jobs = next(iter(self._waiting.items()))
        job = jobs.popleft()
        if jobs:
            self._waiting.move_to_end(client)  # served: the others go first
        else:
            del self._waiting[client]
        self._pending -= 1
        return job

    def _loop(self) -> None:
        while True:
            with self._lock:
                while not self._pending and not self._stopping:
                    self._lock.wait()
                if self._stopping:
                    return
                job = self._next_job()
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
                    self._release(job)
            self._finish(job, result)


def _who(client_id: str) -> str:
    return f"client {client_id!r}" if client_id else "anonymous callers"
