"""The ingest gate's beat, sequence-gap counting and rates of messages never taken (no DDS)."""

from __future__ import annotations

import math

import pytest

from llava3d_ros.ros.diagnostics import RateMeter
from llava3d_ros.ros.ingest_gate import IngestGate, SequenceGaps


def test_rate_zero_never_shuts():
    gate = IngestGate(0.0)
    assert not gate.gating
    for t in range(10):
        gate.frame_synced(float(t))
        assert gate.is_open(float(t) + 0.001)
        assert gate.wait_s(float(t)) is None


@pytest.mark.parametrize("rate", [-1.0, math.nan])
def test_bad_rates_are_refused(rate):
    with pytest.raises(ValueError):
        IngestGate(rate)


def test_gate_keeps_a_steady_beat():
    """30 Hz frames, 5 Hz gate: a frame synced at each opening; openings 0.2 s apart."""
    gate = IngestGate(5.0)
    openings = []
    for i in range(300):  # 10 s of frames
        now = i / 30.0
        if gate.is_open(now):
            openings.append(now)
            gate.frame_synced(now + 0.001)  # the frame completes just after it is taken
        else:
            assert 0.0 <= gate.wait_s(now) <= 0.2
    gaps = [b - a for a, b in zip(openings, openings[1:], strict=False)]
    assert 48 <= len(openings) <= 51
    # frames come every 33 ms: an opening lands on the first frame at or after its beat
    assert all(0.16 <= g <= 0.24 for g in gaps), gaps
    assert sum(gaps) / len(gaps) == pytest.approx(0.2, abs=0.005)


def test_gate_stays_open_until_a_frame_syncs():
    gate = IngestGate(5.0)
    assert gate.is_open(0.0)
    # camera_info missing: nothing syncs, the gate never shuts, every frame is taken
    assert all(gate.is_open(t / 30.0) for t in range(100))
    gate.frame_synced(3.4)  # the stream came back: the beat restarts from now
    assert not gate.is_open(3.5)
    assert gate.wait_s(3.5) == pytest.approx(0.1)
    assert gate.is_open(3.6)


def test_sequence_gaps_count_untaken_messages():
    gaps = SequenceGaps()
    assert gaps.taken(0) == 0  # middleware without sequence numbers: nothing counted
    assert gaps.taken(10) == 0  # first message seen
    assert gaps.taken(11) == 0
    assert gaps.taken(17) == 5
    assert gaps.taken(3) == 0  # a new publisher restarts its numbering
    assert gaps.taken(5) == 1
    assert gaps.untaken == 6


def test_rate_meter_counts_untaken_as_sent():
    meter = RateMeter(window_s=5.0)
    t = 0.0
    for _ in range(20):  # 4 Hz taken, 26 per second skipped in between: 30 Hz sent
        meter.tick(t)
        meter.untaken(6, t + 0.25 - 1e-6)  # counted when the next one is taken
        t += 0.25
    meter.tick(t)
    assert meter.rate(t) == pytest.approx(28.0, rel=0.1)
    assert meter.count == 20 * 7 + 1
    meter.untaken(0, t)
    assert meter.count == 20 * 7 + 1
