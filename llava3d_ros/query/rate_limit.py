"""Per-client query allowance: a token bucket per ``Prompt.client_id``.

rclpy hands a service or goal callback the request alone, not the caller's identity, so
clients name themselves in ``Prompt.client_id``; callers that leave it empty share one bucket.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable


class ClientRateLimiter:
    """At most ``burst`` queries back to back per client, refilled at ``rate_hz`` (0 = no limit).

    Remembers the ``max_clients`` most recently seen clients, so a flood of made-up ids
    cannot grow memory; a forgotten client starts again with a full bucket.
    """

    def __init__(
        self,
        rate_hz: float,
        burst: int,
        max_clients: int = 1024,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if rate_hz < 0 or burst < 1 or max_clients < 1:
            raise ValueError("rate_hz must be >= 0, burst and max_clients >= 1")
        self.rate_hz = rate_hz
        self.burst = burst
        self.max_clients = max_clients
        self._clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # tokens, time
        self._lock = threading.Lock()

    def allow(self, client_id: str) -> bool:
        """Take one query from ``client_id``'s allowance; False when it is used up."""
        if self.rate_hz == 0:
            return True
        now = self._clock()
        with self._lock:
            tokens, then = self._buckets.pop(client_id, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - then) * self.rate_hz)
            allowed = tokens >= 1.0
            self._buckets[client_id] = (tokens - 1.0 if allowed else tokens, now)
            while len(self._buckets) > self.max_clients:
                self._buckets.popitem(last=False)
        return allowed
