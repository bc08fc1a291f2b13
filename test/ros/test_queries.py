"""The bounded query queue: BUSY when full, one at a time, cancel, timeout, failures coded."""

from __future__ import annotations

import threading
import time

import pytest

from llava3d_ros.answer import AnswerResult, ResultCode
from llava3d_ros.ros.queries import Job, QueryQueue
from llava3d_ros.ros.request import QueryRequest


class Gate:
    """A run function that blocks until released (or its job is canceled)."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.started: list[int] = []
        self.concurrent = 0
        self.max_concurrent = 0
        self._lock = threading.Lock()

    def __call__(self, job: Job) -> AnswerResult:
        with self._lock:
            self.concurrent += 1
            self.max_concurrent = max(self.max_concurrent, self.concurrent)
        self.started.append(job.id)
        try:
            while not self.release.wait(0.005):
                if job.cancel.is_set():
                    return AnswerResult(ResultCode.CANCELED, "canceled mid-run")
            return AnswerResult(ResultCode.OK, text=job.request.question)
        finally:
            with self._lock:
                self.concurrent -= 1


def make_job(q: str, results: dict) -> Job:
    done = threading.Event()
    job = Job(QueryRequest(q), lambda r: (results.__setitem__(q, r), done.set()))
    job.done = done  # type: ignore[attr-defined]
    return job


def test_busy_beyond_max_pending_and_one_at_a_time():
    gate = Gate()
    queue = QueryQueue(gate, max_pending=2)
    results: dict = {}
    jobs = [make_job(f"q{i}", results) for i in range(6)]
    accepted = [queue.submit(j) for j in jobs]
    # first one may already run; either way one running + two waiting fit, the rest are refused
    assert accepted[:3] == [True] * 3 and accepted[3:] == [False] * 3
    assert queue.rejected == 3
    gate.release.set()
    for j in jobs[:3]:
        assert j.done.wait(5)
    assert [results[f"q{i}"].text for i in range(3)] == ["q0", "q1", "q2"]
    assert gate.max_concurrent == 1
    queue.stop()


def test_cancel_waiting_and_running():
    gate = Gate()
    queue = QueryQueue(gate, max_pending=4)
    results: dict = {}
    running, waiting = make_job("run", results), make_job("wait", results)
    queue.submit(running)
    queue.submit(waiting)
    deadline = time.monotonic() + 5
    while not gate.started and time.monotonic() < deadline:
        time.sleep(0.005)
    queue.cancel(waiting)
    assert waiting.done.wait(1) and results["wait"].code == ResultCode.CANCELED
    t0 = time.monotonic()
    queue.cancel(running)
    assert running.done.wait(2) and results["run"].code == ResultCode.CANCELED
    assert time.monotonic() - t0 < 0.5
    assert gate.started == [running.id]  # the canceled waiting job never ran
    queue.stop()


def test_timeout_gives_timeout_code():
    gate = Gate()
    queue = QueryQueue(gate, max_pending=1, timeout_s=0.1)
    results: dict = {}
    a, b = make_job("a", results), make_job("b", results)
    assert queue.submit(a) and queue.submit(b)
    assert a.done.wait(2) and b.done.wait(2)
    assert results["a"].code == ResultCode.TIMEOUT and "timed out" in results["a"].message
    assert results["b"].code == ResultCode.TIMEOUT
    queue.stop()


def test_failure_in_run_is_model_error_and_queue_keeps_serving():
    calls = []

    def run(job: Job) -> AnswerResult:
        calls.append(job.id)
        if job.request.question == "boom":
            raise RuntimeError("kaput")
        return AnswerResult(ResultCode.OK)

    queue = QueryQueue(run, max_pending=2)
    results: dict = {}
    bad, good = make_job("boom", results), make_job("fine", results)
    queue.submit(bad)
    queue.submit(good)
    assert bad.done.wait(2) and good.done.wait(2)
    assert results["boom"].code == ResultCode.MODEL_ERROR and "kaput" in results["boom"].message
    assert results["fine"].code == ResultCode.OK
    queue.stop()


def test_stop_answers_waiting_not_ready_and_refuses_new():
    gate = Gate()
    queue = QueryQueue(gate, max_pending=3)
    results: dict = {}
    jobs = [make_job(f"q{i}", results) for i in range(3)]
    for j in jobs:
        queue.submit(j)
    queue.stop("deactivated")
    for j in jobs:
        assert j.done.wait(2)
    codes = {results[f"q{i}"].code for i in range(3)}
    assert codes <= {ResultCode.NOT_READY, ResultCode.CANCELED}
    assert ResultCode.NOT_READY in codes
    assert not queue.submit(make_job("late", results))


def test_bad_settings():
    with pytest.raises(ValueError):
        QueryQueue(lambda j: AnswerResult(ResultCode.OK), max_pending=-1)
