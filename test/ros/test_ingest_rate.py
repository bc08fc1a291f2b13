"""ingest_rate_hz against a running node: images taken at the gate's rate, the rest counted."""

from __future__ import annotations

import time

import pytest

from .conftest import harness, node_rig, plane_frame

pytestmark = pytest.mark.ros

RATE_HZ = 4.0
SEND_HZ = 30.0


def _stream(rig, seconds: float, t0_s: float) -> int:
    """Publish a 30 Hz stream of posed frames for ``seconds``; returns how many were sent."""
    f = plane_frame(320, 240)
    sent = 0
    start = time.monotonic()
    while (now := time.monotonic() - start) < seconds:
        stamp = int((t0_s + now) * 1e9)
        rig["pub"].publish(f["rgb"], f["depth"], f["k"], f["pose"], stamp)
        sent += 1
        time.sleep(max(0.0, sent / SEND_HZ - (time.monotonic() - start)))
    return sent


def _not_taken(diag) -> int:
    return sum(int(diag.get(f"not_taken.{t}")) for t in ("rgb/image", "depth/image"))


def test_images_are_taken_at_the_ingest_rate_and_the_rest_counted(
    node_factory, ros_context, request
):
    with node_rig(
        node_factory,
        ros_context,
        f"ingest_rate_hz:={RATE_HZ}",
        "diagnostics_period_s:=0.2",
        name="llava3d",
    ) as rig:
        diag = rig["diag"]
        h = harness(request.config)
        _stream(rig, 1.0, 100.0)  # warm-up: discovery settled, the first frames synced
        h.wait_for(lambda: int(diag.get("frames_synced")) > 0, 20, "a first synced frame")
        synced0 = int(diag.get("frames_synced"))
        skipped0 = _not_taken(diag)
        drops0 = diag.drops()  # the warm-up's own drops are not the window's
        seconds = 5.0
        sent = _stream(rig, seconds, 200.0)
        time.sleep(0.6)  # two diagnostics periods
        synced = int(diag.get("frames_synced")) - synced0
        skipped = _not_taken(diag) - skipped0
        rgb_rate = float(diag.get("rate_hz.rgb/image"))
        print(f"sent {sent}, synced {synced}, not taken {skipped}, rgb rate {rgb_rate} Hz")
        # about RATE_HZ frames per second reach the scene (a slow box may miss beats, never
        # exceed them), not every frame sent
        assert 0.5 * RATE_HZ * seconds <= synced <= RATE_HZ * (seconds + 1) + 2, (synced, sent)
        # both image streams leave the rest in DDS, and they are counted
        assert skipped >= sent, (skipped, sent)
        # the input rate reported is the rate sent, not the rate taken
        assert 0.6 * SEND_HZ <= rgb_rate <= 1.3 * SEND_HZ, rgb_rate
        assert int(diag.get("not_taken.rgb/camera_info")) > 0  # static calibration: gated too
        assert int(diag.get("not_taken.pose", "-1")) == -1  # poses never wait: all taken
        # an opening that falls between a depth image and its colour takes the colour of one
        # frame and the depth of the next: that colour is dropped unpaired (rare, never most)
        drops = {k: v for k, v in diag.values.items() if "drops" in k}
        assert diag.drops() - drops0 <= max(2, synced // 4), (drops, drops0)
