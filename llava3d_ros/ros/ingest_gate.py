"""When the node takes images from DDS at all (``ingest_rate_hz``); no ROS types.

At 30 Hz the cost of an RGB-D stream is mostly in taking each image out of DDS (rmw and
rclpy each copy it) and waking up for it, not in what the node does with it: the scene only
keeps a few keyframes per second. So image (and camera_info) subscriptions are left out of
the wait set while the gate is shut; DDS keeps only the newest message (history depth 1) and
overwrites the rest.
The gate opens on a steady beat of ``1 / rate_hz`` and stays open until a frame has been
synchronised (colour, depth, camera_info and pose), so a missing stream still shows up as
sync drops instead of silence. Rate 0 keeps the gate open: every frame is taken.
"""

from __future__ import annotations

import threading


class IngestGate:
    """Open/shut state of the image subscriptions, driven by frames synchronised."""

    def __init__(self, rate_hz: float) -> None:
        if not rate_hz >= 0.0:  # also rejects NaN
            raise ValueError(f"ingest rate must be >= 0 Hz, got {rate_hz}")
        self.rate_hz = rate_hz
        self._period = 1.0 / rate_hz if rate_hz > 0 else 0.0
        self._lock = threading.Lock()
        self._open = True
        self._opened_at: float | None = None  # the beat the current opening belongs to
        self._next_open = 0.0

    @property
    def gating(self) -> bool:
        return self._period > 0

    def is_open(self, now: float) -> bool:
        """Whether images are to be taken now (opens the gate when its beat has come)."""
        with self._lock:
            if not self._open and now >= self._next_open:
                self._open = True
                self._opened_at = self._next_open
            elif self._open and self._opened_at is None:
                self._opened_at = now
            return self._open

    def wait_s(self, now: float) -> float | None:
        """How long the gate stays shut from ``now``; None while it is open."""
        with self._lock:
            return None if self._open else max(self._next_open - now, 0.0)

    def frame_synced(self, now: float) -> None:
        """A frame is complete: shut until the next beat (never earlier than one period on)."""
        if not self.gating:
            return
        with self._lock:
            if not self._open:
                return
            start = self._opened_at if self._opened_at is not None else now
            # a steady beat, but an opening that lasted longer than a period (a stream that was
            # missing) restarts it from now instead of opening again at once
            self._next_open = start + self._period
            if self._next_open <= now:
                self._next_open = now + self._period
            self._open = False
            self._opened_at = None


class SequenceGaps:
    """Messages a publisher sent that were never taken, from publication sequence numbers."""

    def __init__(self) -> None:
        self._last: int | None = None
        self.untaken = 0

    def taken(self, sequence: int) -> int:
        """Record a taken message's sequence number; returns how many were skipped before it.

        0 when the number is unknown (0), on the first message, or when the sequence restarted
        (a new publisher: its numbers start again at 1).
        """
        if sequence <= 0:
            return 0
        last, self._last = self._last, sequence
        if last is None or sequence <= last:
            return 0
        gap = sequence - last - 1
        self.untaken += gap
        return gap
