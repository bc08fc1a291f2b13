"""The bounded query queue: BUSY when full, one at a time, cancel, timeout, failures coded."""

from __future__ import annotations

import collections
import random
import threading
import time

import pytest

from llava3d_ros.answer import AnswerResult, ResultCode
from llava3d_ros.query.queue import Job, QueryQueue
from llava3d_ros.query.request import QueryRequest


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


# --- fairness under overload: per-client shares of the queue's capacity -----------------------


def client_job(client: str, calls: collections.Counter, results: dict) -> Job:
    """A job of ``client`` whose ``on_done`` calls are counted (by job id) and kept."""
    done = threading.Event()
    holder: list[Job] = []

    def on_done(result: AnswerResult) -> None:
        calls[holder[0].id] += 1
        results[holder[0].id] = result
        done.set()

    job = Job(QueryRequest("q", client_id=client), on_done)
    holder.append(job)
    job.done = done  # type: ignore[attr-defined]
    return job


def wait_running(gate: Gate, n: int = 1) -> None:
    deadline = time.monotonic() + 5
    while len(gate.started) < n and time.monotonic() < deadline:
        time.sleep(0.002)
    assert len(gate.started) >= n


def test_not_full_accepts_anyone_full_displaces_newest_of_largest_holder():
    gate = Gate()
    queue = QueryQueue(gate, max_pending=3)  # capacity 4: three waiting + one running
    calls: collections.Counter = collections.Counter()
    results: dict = {}
    flood = [client_job("flood", calls, results) for _ in range(4)]
    assert all(queue.submit(j) for j in flood)  # not full: accepted, however many one holds
    wait_running(gate)
    assert queue.held("flood") == 4 and queue.pending == 3

    a1 = client_job("a", calls, results)
    assert queue.submit(a1)  # full, but flood holds 4 >= 0 + 2: its newest waiting job goes
    assert flood[3].done.is_set() and calls[flood[3].id] == 1
    busy = results[flood[3].id]
    assert busy.code == ResultCode.BUSY and "fair-share" in busy.message
    assert "client 'flood' held 4 of 4" in busy.message
    assert queue.held("flood") == 3 and queue.held("a") == 1
    assert queue.displaced == 1 and queue.rejected == 0

    a2 = client_job("a", calls, results)
    assert queue.submit(a2)  # flood 3 >= 1 + 2: flood's newest waiting job again
    assert flood[2].done.is_set() and results[flood[2].id].code == ResultCode.BUSY
    assert queue.held("flood") == 2 and queue.held("a") == 2

    # now nobody holds two more than anybody else: both are refused, nothing displaced
    a3, f5 = client_job("a", calls, results), client_job("flood", calls, results)
    assert not queue.submit(a3) and not queue.submit(f5)
    assert queue.rejected == 2 and queue.displaced == 2
    reason = queue.refusal_reason("a")
    assert "fair-share" in reason and "client 'a' holds 2 of 4" in reason
    assert "3 queries are waiting (max_pending_queries=3)" in reason

    # anonymous callers (one client) hold 0: of the two largest holders (2 each), the one
    # with the newest waiting job (a2) loses it; the running job is never touched
    anon = client_job("", calls, results)
    assert queue.submit(anon)
    assert a2.done.is_set() and results[a2.id].code == ResultCode.BUSY
    assert queue.held("a") == 1 and queue.held("flood") == 2 and queue.held("") == 1

    gate.release.set()
    for j in (flood[0], flood[1], a1, anon):
        assert j.done.wait(5)
    assert gate.started == [flood[0].id, flood[1].id, a1.id, anon.id]  # FIFO as before
    for j in (flood[0], flood[1], a1, anon):
        assert results[j.id].code == ResultCode.OK
    # every accepted job answered exactly once; refused ones only by the caller (no on_done)
    assert all(calls[j.id] == 1 for j in [*flood, a1, a2, anon])
    assert calls[a3.id] == 0 and calls[f5.id] == 0
    assert queue.completed == 7  # 4 run + 3 displaced
    assert queue.held("flood") == queue.held("a") == queue.held("") == 0
    queue.stop()


def test_clients_are_served_in_turn_each_first_come_first_served():
    gate = Gate()
    queue = QueryQueue(gate, max_pending=5)
    calls: collections.Counter = collections.Counter()
    results: dict = {}
    x = [client_job("x", calls, results) for _ in range(4)]
    assert queue.submit(x[0])
    wait_running(gate)
    assert all(queue.submit(j) for j in x[1:])
    y, z = client_job("y", calls, results), client_job("", calls, results)
    assert queue.submit(y) and queue.submit(z)
    assert queue.pending == 5
    gate.release.set()
    assert all(j.done.wait(5) for j in [*x, y, z])
    # y and the anonymous job wait behind one more of x's, not behind all three
    assert gate.started == [x[0].id, x[1].id, y.id, z.id, x[2].id, x[3].id]
    queue.stop()


def test_anonymous_callers_are_one_client():
    gate = Gate()
    queue = QueryQueue(gate, max_pending=2)
    calls: collections.Counter = collections.Counter()
    results: dict = {}
    anon = [client_job("", calls, results) for _ in range(3)]
    assert all(queue.submit(j) for j in anon)
    wait_running(gate)
    assert not queue.submit(client_job("", calls, results))  # same client: no displacing itself
    assert queue.displaced == 0
    assert "anonymous callers hold 3 of 3" in queue.refusal_reason("")
    assert queue.submit(client_job("x", calls, results))  # another client may displace them
    assert results[anon[2].id].code == ResultCode.BUSY
    assert "anonymous callers held 3 of 3" in results[anon[2].id].message
    assert "client 'x' held 0" in results[anon[2].id].message
    gate.release.set()
    queue.stop()


def test_running_job_is_never_displaced():
    gate = Gate()
    queue = QueryQueue(gate, max_pending=0)  # capacity 1: only the running job
    calls: collections.Counter = collections.Counter()
    results: dict = {}
    running = client_job("flood", calls, results)
    assert queue.submit(running)
    wait_running(gate)
    other = client_job("a", calls, results)
    assert not queue.submit(other)  # flood holds 1 < 0 + 2
    assert calls[running.id] == 0 and not running.cancel.is_set()
    assert "0 queries are waiting (max_pending_queries=0)" in queue.refusal_reason("a")
    gate.release.set()
    assert running.done.wait(5) and results[running.id].code == ResultCode.OK
    queue.stop()


def test_counts_follow_cancel_timeout_and_stop():
    gate = Gate()
    queue = QueryQueue(gate, max_pending=3, timeout_s=0.2)
    calls: collections.Counter = collections.Counter()
    results: dict = {}
    jobs = [client_job("c", calls, results) for _ in range(4)]
    assert all(queue.submit(j) for j in jobs)
    wait_running(gate)
    queue.cancel(jobs[3])
    assert queue.held("c") == 3
    assert queue.refusal_reason("c") == (
        "2 queries are waiting (max_pending_queries=3); try again later"
    )  # not full now
    for j in jobs:  # the rest time out (the running one is canceled mid-run)
        assert j.done.wait(5)
    assert [results[j.id].code for j in jobs] == [ResultCode.TIMEOUT] * 3 + [ResultCode.CANCELED]
    deadline = time.monotonic() + 5
    while queue.held("c") and time.monotonic() < deadline:
        time.sleep(0.005)
    assert queue.held("c") == 0 and not queue._held
    more = [client_job("d", calls, results) for _ in range(2)]
    assert all(queue.submit(j) for j in more)
    queue.stop()
    assert all(j.done.wait(5) for j in more) and not queue._held
    assert queue.refusal_reason("d") == "the query queue is shutting down"
    assert all(n == 1 for n in calls.values())


def flood(
    queue: QueryQueue, threads: dict[str, int], answers: int, timeout_s: float = 60.0
) -> dict:
    """``threads[client]`` callers per client, each resubmitting at once after every reply,
    until the queue has answered ``answers`` jobs OK (or ``timeout_s`` has passed).

    Returns per-client counts (``submitted``; ``ok``; ``busy``: refused by ``submit`` or
    displaced later; ``lost``: no answer within 30 s), the ids of the accepted jobs and how
    many times each job's ``on_done`` was called, and how many callers never finished.
    """
    lock = threading.Lock()
    calls: collections.Counter = collections.Counter()
    counts = {c: collections.Counter() for c in threads}
    accepted: set[int] = set()
    enough = threading.Event()  # set by the caller that counts the ``answers``-th OK
    deadline = time.monotonic() + timeout_s

    def caller(client: str) -> None:
        mine = counts[client]
        while not enough.is_set() and time.monotonic() < deadline:
            done = threading.Event()
            got: list[AnswerResult] = []
            holder: list[Job] = []

            def on_done(result: AnswerResult, holder=holder, got=got, done=done) -> None:
                with lock:
                    calls[holder[0].id] += 1
                got.append(result)
                done.set()

            job = Job(QueryRequest("q", client_id=client), on_done)
            holder.append(job)
            with lock:
                mine["submitted"] += 1
            if not queue.submit(job):
                with lock:
                    mine["busy"] += 1  # the caller's own BUSY reply
                continue
            with lock:
                accepted.add(job.id)
            if not done.wait(30):
                with lock:
                    mine["lost"] += 1
                continue
            with lock:
                mine["ok" if got[0].code == ResultCode.OK else "busy"] += 1
                if sum(c["ok"] for c in counts.values()) >= answers:
                    enough.set()

    callers = [
        threading.Thread(target=caller, args=(c,), daemon=True)
        for c, n in threads.items()
        for _ in range(n)
    ]
    for t in callers:
        t.start()
    for t in callers:
        t.join(timeout_s + 60)
    time.sleep(0.2)  # a late second on_done would show up here
    queue.stop()
    return {
        "counts": counts,
        "calls": calls,
        "accepted": accepted,
        "alive": sum(t.is_alive() for t in callers),
    }


RUN_RNG = random.Random(0)  # used by the queue's one worker thread only


def sleepy_run(job: Job) -> AnswerResult:
    """The "model": 20-50 ms."""
    time.sleep(RUN_RNG.uniform(0.02, 0.05))
    return AnswerResult(ResultCode.OK)


FLOOD_THREADS = {"one": 1, "two": 2, "four": 4, "": 8}  # "" = anonymous callers, one client


def ok_shares(counts: dict) -> dict[str, float]:
    total = sum(c["ok"] for c in counts.values())
    return {client: c["ok"] / total for client, c in counts.items()}


def assert_fair_and_none_lost(out: dict, answers: int) -> None:
    counts = out["counts"]
    assert out["alive"] == 0
    assert all(c["lost"] == 0 for c in counts.values()), counts
    # every submitted job got exactly one reply: BUSY from its caller when refused, otherwise
    # exactly one on_done (and a refused job none)
    assert set(out["calls"]) == out["accepted"]
    assert all(n == 1 for n in out["calls"].values())
    for c in counts.values():
        assert c["submitted"] == c["ok"] + c["busy"]
    # the flood ended with its answers, not at the time limit
    assert sum(c["ok"] for c in counts.values()) >= answers, counts
    shares = ok_shares(counts)
    print("OK shares:", {k or "anonymous": f"{v:.1%}" for k, v in shares.items()}, counts)
    assert all(0.15 <= s <= 0.35 for s in shares.values()), (shares, counts)


@pytest.mark.slow
def test_flooding_clients_share_the_queue_fairly():
    """4 clients flood with 1, 2, 4 and 8 callers until 250 answers: none lost, OK shares 15-35 %.

    First come, first served (the queue before the fair-share rule) gave them 6.7, 13.7, 27.3 and 52.3 % (in proportion to their callers).
    The shares are systematic, not sampling noise: 250 answers (about 9 s) gave the same as a
    60 s flood (1,030 answers on a loaded machine: 21.8, 23.1, 25.7, 29.3 %).
    """
    queue = QueryQueue(sleepy_run, max_pending=4)
    assert_fair_and_none_lost(flood(queue, FLOOD_THREADS, answers=250), answers=250)
