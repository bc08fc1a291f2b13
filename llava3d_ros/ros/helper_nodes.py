"""The node's helper nodes: sensor inputs served by a wait loop of their own, and queries.

They keep the lifecycle node's executor (parameter and lifecycle services, ~40 entities) off
the two hot paths: 30 Hz sensor messages and the polling of awaiting query handlers.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from rclpy.exceptions import InvalidHandle
from rclpy.executors import ExternalShutdownException, ShutdownException, SingleThreadedExecutor
from rclpy.guard_condition import GuardCondition
from rclpy.node import Node
from rclpy.parameter import Parameter

from llava3d_ros.ros.ingest_gate import IngestGate, SequenceGaps
from llava3d_ros.ros.rclpy_internals import SubscriptionWaitSet, take_message
from llava3d_ros.threads import named_thread


def helper_node(owner: Node, suffix: str) -> Node:
    """A minimal node ``<owner>_<suffix>`` beside ``owner`` (no parameter or type services).

    It ignores the process's remapping arguments: give it names already resolved by the owner
    (``owner.resolve_topic_name``), so namespaces and remappings (global or targeted at the
    owner) apply as they would on the owner, and no rule applies twice.
    """
    return Node(
        f"{owner.get_name()}_{suffix}",
        namespace=owner.get_namespace(),
        context=owner.context,
        use_global_arguments=False,
        start_parameter_services=False,
        parameter_overrides=[
            Parameter("start_type_description_service", Parameter.Type.BOOL, False)
        ],
    )


class QueryInterfaces:
    """A helper node for ~/query, ~/ask and clicked_point, spun by an executor of its own.

    Their handlers await the query worker; rclpy resumes an awaiting handler by polling it on
    every wake-up of its executor, and each wake-up rebuilds the wait set from every entity of
    the executor's nodes. On the lifecycle node's executor (parameter and lifecycle services,
    publishers' event handlers: ~40 entities) that cost ~1 ms a time, several times a query;
    here the wait set holds a handful.
    """

    def __init__(self, owner: Node) -> None:
        self._log = owner.get_logger()
        self.node = helper_node(owner, "queries")
        self.executor = SingleThreadedExecutor(context=owner.context)
        self.executor.add_node(self.node)
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = named_thread(self._spin, "llava3d-queries")
        self._thread.start()

    def _spin(self) -> None:
        while True:
            try:
                self.executor.spin()  # returns once shut down
                return
            except (ExternalShutdownException, ShutdownException):
                return
            except InvalidHandle as exc:
                # a reply to a service or goal that deactivate destroyed mid-call: the caller
                # misses that one answer, the others must still be served
                self._log.warning(f"reply dropped (interface destroyed mid-call): {exc}")
            except Exception as exc:  # queries must still be served after a failed callback
                self._log.error(f"query callback failed: {type(exc).__name__}: {exc}")

    def close(self) -> None:
        """Stop the executor (waiting for a callback in progress), then destroy the node."""
        self.executor.shutdown(timeout_sec=5.0)
        if self._thread is not None:
            self._thread.join(5.0)
        self.node.destroy_node()


class SensorInputs:
    """Subscriptions on a minimal node of their own, served by a wait loop on a thread of its own.

    At 30 Hz RGB-D, rclpy's executors spend more per message than the callbacks do (a wait
    set built from every entity of the node, a task and a generator step per callback); this
    loop keeps one wait set over these few subscriptions and calls the callbacks directly, the
    way ``rclpy.wait_for_message`` waits. Their QoS event handlers (incompatible-QoS
    warnings) are served too. ``subscribe`` takes topic names already resolved by the owner
    (see ``helper_node``). A callback that raises is reported to ``on_error(name, exc)`` and
    the loop goes on.

    Subscriptions made with ``gated=True`` are served only while ``gate`` is open (see
    ``ingest_gate``); the messages they were never given are counted from publication
    sequence numbers and reported to ``on_untaken(name, n)``.
    """

    WAKE_NS = 1_000_000_000  # wait at most this long, to notice a shut-down context

    def __init__(
        self,
        owner: Node,
        on_error: Callable[[str, Exception], None],
        gate: IngestGate | None = None,
        on_untaken: Callable[[str, int], None] | None = None,
    ) -> None:
        self._context = owner.context
        self._on_error = on_error
        self._on_untaken = on_untaken
        self.gate = gate if gate is not None else IngestGate(0.0)
        self._log = owner.get_logger()
        self.node = helper_node(owner, "sensors")
        self._subs: list[tuple[str, Any, bool]] = []
        self._wake = GuardCondition(None, None, context=owner.context)
        self._stopping = False
        self._thread: threading.Thread | None = None

    @property
    def subscriptions(self) -> Iterator[Any]:
        return self.node.subscriptions

    def subscribe(
        self,
        name: str,
        msg_type: Any,
        topic: str,
        callback: Callable,
        qos: Any,
        raw: bool = False,
        gated: bool = False,
    ) -> None:
        """Subscribe ``callback`` to the resolved ``topic``; ``name`` labels its errors."""
        sub = self.node.create_subscription(msg_type, topic, callback, qos, raw=raw)
        self._subs.append((name, sub, gated and self.gate.gating))

    def start(self) -> None:
        self._thread = named_thread(self._run, "llava3d-sensors")
        self._thread.start()

    def close(self) -> None:
        """Stop the loop (after the callback in progress), then destroy the subscriptions."""
        self._stopping = True
        with contextlib.suppress(Exception):  # a shut-down context: the loop exits by itself
            self._wake.trigger()
        if self._thread is not None:
            self._thread.join(5.0)
        self.node.destroy_node()
        self._wake.destroy()

    def _run(self) -> None:
        try:
            subs, gated_events = [], set()
            for name, sub, gated in self._subs:
                subs.append(_Served(name, sub, gated))
                if gated:
                    gated_events.update(id(h) for h in sub.event_handlers)
            events = [(w, id(w) in gated_events) for w in self.node.waitables]
            with SubscriptionWaitSet(
                self._context, [s.sub for s in subs], [self._wake], [w for w, _ in events]
            ) as wait_set:
                self._loop(wait_set, subs, events)
        except Exception as exc:
            if not self._stopping and self._context.ok():  # else: shut down under us
                self._log.error(f"sensor inputs stopped: {type(exc).__name__}: {exc}")

    def _loop(
        self, wait_set: SubscriptionWaitSet, subs: list[_Served], events: list[tuple[Any, bool]]
    ) -> None:
        gate = self.gate
        while not self._stopping and self._context.ok():
            now = time.monotonic()
            open_ = gate.is_open(now)
            timeout_ns = self.WAKE_NS
            if not open_:
                timeout_ns = min(timeout_ns, int((gate.wait_s(now) or 0.0) * 1e9) + 1)
            # a shut gate leaves its subscriptions (and their QoS events) out of the wait set:
            # their messages wait in DDS, where the newest overwrites the rest
            served = [sub for sub in subs if open_ or not sub.gated]
            watched = [w for w, gated in events if open_ or not gated]
            subs_ready, events_ready = wait_set.wait(
                [s.sub for s in served], [self._wake], watched, timeout_ns
            )
            if self._stopping:
                return
            for sub, ready in zip(served, subs_ready, strict=True):
                if ready:
                    self._take_all(sub)
            for w, ready in zip(watched, events_ready, strict=True):
                if ready:
                    try:
                        _run_coroutine(w.execute(w.take_data()))
                    except Exception as exc:
                        self._log.warning(f"QoS event handler failed: {type(exc).__name__}: {exc}")

    def _take_all(self, sub: _Served) -> None:
        """Everything queued for ``sub`` (a gated one: while the gate stays open)."""
        while not sub.gated or self.gate.is_open(time.monotonic()):
            taken = take_message(sub.sub)
            if taken is None:
                return
            msg, sequence_number = taken
            if sub.gated and self._on_untaken is not None:
                missed = sub.gaps.taken(sequence_number)
                if missed:
                    self._on_untaken(sub.name, missed)
            try:
                sub.sub.callback(msg)
            except Exception as exc:
                self._on_error(sub.name, exc)


@dataclass
class _Served:
    """A subscription as the sensor loop serves it."""

    name: str
    sub: Any  # rclpy Subscription
    gated: bool
    gaps: SequenceGaps = field(default_factory=SequenceGaps)


def _run_coroutine(coro: Any) -> None:
    """Run a coroutine that never awaits anything pending (an event handler's execute)."""
    with contextlib.suppress(StopIteration):
        coro.send(None)
    coro.close()
