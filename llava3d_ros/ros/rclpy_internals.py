"""The rclpy internals the node uses, all in this module: each where rclpy has no public way.

They come from rclpy's compiled module, ``rclpy.impl.implementation_singleton.
rclpy_implementation`` (``_rclpy`` below), whose names and signatures used here are the same on
Jazzy (rclpy 7.1) and Kilted (9.1); ``test/ros/test_rclpy_internals.py`` checks each on both
distributions CI runs.

- ``SubscriptionWaitSet``: ``_rclpy.WaitSet``, rclpy's C wait set, and the handles' context
  managers that keep them alive while waited on. The sensor loop (``helper_nodes.SensorInputs``)
  waits on its few subscriptions the way ``rclpy.wait_for_message`` does, with this same class;
  the public way to wait, an executor, costs more per 30 Hz message than the callbacks do.
- ``take_message``: ``Subscription.handle.take_message``, as ``wait_for_message`` takes, with the
  message info's ``publication_sequence_number`` (how the node counts messages it never took).
- ``InvalidROSArgsError``, ``UnknownROSArgsError``: what ``rclpy.init`` raises for bad
  ``--ros-args`` (an unparseable params file, an unknown argument); rclpy re-exports neither.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

from rclpy.context import Context
from rclpy.guard_condition import GuardCondition
from rclpy.impl.implementation_singleton import rclpy_implementation as _rclpy
from rclpy.subscription import Subscription
from rclpy.waitable import NumberOfEntities, Waitable

InvalidROSArgsError: type[Exception] = _rclpy.RCLInvalidROSArgsError
UnknownROSArgsError: type[Exception] = _rclpy.UnknownROSArgsError


class SubscriptionWaitSet:
    """A wait set over subscriptions, guard conditions and waitables, built once, refilled per wait.

    A context manager: while entered, it holds the handles of every entity it was built for
    (and of the context), so none is destroyed under a wait. Each ``wait`` may watch any subset.
    """

    def __init__(
        self,
        context: Context,
        subscriptions: Sequence[Subscription],
        guard_conditions: Sequence[GuardCondition],
        waitables: Sequence[Waitable],
    ) -> None:
        self._context = context
        self._entities = (list(subscriptions), list(guard_conditions), list(waitables))
        self._held = contextlib.ExitStack()
        self._wait_set: Any = None

    def __enter__(self) -> SubscriptionWaitSet:
        subs, guards, waitables = self._entities
        with contextlib.ExitStack() as held:
            for sub in subs:
                held.enter_context(sub.handle)
            for guard in guards:
                held.enter_context(guard.handle)
            counts = NumberOfEntities(len(subs), len(guards))
            for w in waitables:
                held.enter_context(w)
                counts += w.get_num_entities()
            held.enter_context(self._context.handle)
            self._wait_set = _rclpy.WaitSet(
                counts.num_subscriptions,
                counts.num_guard_conditions,
                counts.num_timers,
                counts.num_clients,
                counts.num_services,
                counts.num_events,
                self._context.handle,
            )
            self._held = held.pop_all()
        return self

    def __exit__(self, *exc: object) -> None:
        self._wait_set = None
        self._held.close()

    def wait(
        self,
        subscriptions: Sequence[Subscription],
        guard_conditions: Sequence[GuardCondition],
        waitables: Sequence[Waitable],
        timeout_ns: int,
    ) -> tuple[list[bool], list[bool]]:
        """Wait until one is ready or ``timeout_ns`` passed: which subscriptions and waitables are."""
        ws = self._wait_set
        ws.clear_entities()
        for sub in subscriptions:
            ws.add_subscription(sub.handle)
        for guard in guard_conditions:
            ws.add_guard_condition(guard.handle)
        for w in waitables:
            w.add_to_wait_set(ws)
        ws.wait(timeout_ns)
        subs_ready = [ws.is_ready("subscription", i) for i in range(len(subscriptions))]
        return subs_ready, [w.is_ready(ws) for w in waitables]


def take_message(sub: Subscription) -> tuple[Any, int] | None:
    """The next message queued for ``sub`` and its publication sequence number (0: none), or None."""
    taken = sub.handle.take_message(sub.msg_type, sub.raw)
    if taken is None:
        return None
    msg, info = taken
    return msg, int(info.get("publication_sequence_number", 0))
