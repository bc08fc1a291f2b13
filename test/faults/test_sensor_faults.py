"""Sensor faults against a running node: dropout, a pose stream that stops or jumps, stamps going back."""

from __future__ import annotations

import itertools
import time

import numpy as np
import pytest

from llava3d_ros.msg import Answer
from llava3d_ros.ros.client import make_prompt
from llava3d_ros.ros.convert import stamp_to_ns

from .conftest import harness, plane_frame

pytestmark = pytest.mark.ros

_SECOND = 1_000_000_000
# message time of this module's frames only moves forward (except where a test jumps it back)
_clock = itertools.count(start=10)


def _publish(
    rig, n: int, pose: bool = True, dt_s: float = 0.1, start_s: float | None = None
) -> int:
    """``n`` frames ``dt_s`` apart in message time; returns the last stamp (ns)."""
    f = plane_frame()
    t0 = float(next(_clock) * 10) if start_s is None else start_s
    stamp = 0
    for i in range(n):
        stamp = int((t0 + i * dt_s) * _SECOND)
        rig["pub"].publish(f["rgb"], f["depth"], f["k"], f["pose"] if pose else None, stamp)
        time.sleep(0.03)
    return stamp


def _ask(rig, timeout: float = 30.0) -> Answer:
    answer = rig["client"].query(make_prompt("what is in front of me?"), timeout=timeout)
    assert answer.code <= Answer.NOT_READY and (answer.success or answer.message)
    return answer


def _until_ok(rig, request, what: str, pose: bool = True) -> Answer:
    answers: list[Answer] = []

    def ok() -> bool:
        _publish(rig, 3, pose=pose)
        answers.append(_ask(rig))
        return answers[-1].code == Answer.OK

    harness(request.config).wait_for(ok, 40, what, interval=0.2)
    return answers[-1]


def _settled(rig, request) -> int:
    """frames_synced once every frame sent so far is synced or dropped (none held, none queued).

    Frames still in flight from an earlier step would otherwise look like new ones being used.
    """
    diag, seen = rig["diag"], []

    def idle() -> bool:
        held = ("color", "depth", "awaiting_pose")  # camera_info is kept on purpose
        busy = int(diag.get("ingest_queue", "1")) + sum(
            int(diag.get(f"sync_waiting.{k}", "1")) for k in held
        )
        seen.append(int(diag.get("frames_synced")))
        time.sleep(0.25)  # > one diagnostics period (0.2 s): the next read is a newer report
        return busy == 0 and len(seen) > 1 and seen[-1] == seen[-2]

    harness(request.config).wait_for(idle, 20, "the node to finish syncing sent frames", 0.0)
    return seen[-1]


def test_sensor_dropout_and_resumption(rig, request):
    _until_ok(rig, request, "a first OK answer")
    synced = _settled(rig, request)
    time.sleep(2.0)  # every sensor silent: the node answers from the frames it buffered
    during = _ask(rig)
    assert during.code == Answer.OK, during.message
    assert rig["node"].alive()
    _publish(rig, 5)  # sensors resume
    harness(request.config).wait_for(
        lambda: int(rig["diag"].get("frames_synced")) > synced, 10, "resumed frames to sync"
    )
    assert _ask(rig).code == Answer.OK


def test_pose_stream_stops(rig, request):
    _until_ok(rig, request, "an OK answer with poses")
    synced = _settled(rig, request)
    before = rig["diag"].drops()
    # 2 s of message time without a pose: each frame waits pose_wait_s (0.5 s), then is dropped
    _publish(rig, 20, pose=False)
    h = harness(request.config)
    h.wait_for(lambda: rig["diag"].drops() >= before + 5, 10, "pose-less frames to be dropped")
    dropped = {k: v for k, v in rig["diag"].values.items() if k.startswith("sync_drops.")}
    assert any("pose" in k for k in dropped), dropped
    assert int(rig["diag"].get("frames_synced")) == synced, "a frame without a pose was used"
    still = _ask(rig)  # the buffer still holds the posed frames
    assert still.code == Answer.OK, still.message

    # poses resume: an OK answer alone proves nothing (the buffer answers), new frames must sync
    def resumed() -> bool:
        _publish(rig, 3)
        return int(rig["diag"].get("frames_synced")) > synced

    harness(request.config).wait_for(resumed, 30, "posed frames to sync again", interval=0.3)
    assert _ask(rig).code == Answer.OK


def test_clock_jump_backwards(rig, request):
    last = _publish(rig, 3)
    h = harness(request.config)
    h.wait_for(lambda: _ask(rig).code == Answer.OK, 20, "an OK answer before the jump")
    diag = rig["diag"]

    def rejected() -> int:  # the synchroniser's drop or the scene buffer's out-of-order refusal
        return diag.drops("colour stamp not newer") + int(diag.get("errors.frame"))

    before = rejected()
    synced = int(diag.get("frames_synced"))
    # a bag loop under use_sim_time: stamps restart 5 s in the past
    _publish(rig, 6, start_s=last / _SECOND - 5.0)
    h.wait_for(lambda: rejected() > before, 10, "frames stamped in the past to be rejected")
    reason = diag.get("last_error.frame", "") + " " + diag.messages.get("inputs", "")
    assert "out-of-order" in reason or "not newer" in reason, reason
    answer = _ask(rig)
    assert answer.code == Answer.OK, answer.message
    time.sleep(0.5)
    after_jump, synced = rejected(), int(diag.get("frames_synced"))
    _publish(rig, 3)  # time moves forward again: frames are accepted, none rejected
    h.wait_for(lambda: int(diag.get("frames_synced")) > synced, 10, "frames after the jump")
    time.sleep(0.5)
    assert rejected() == after_jump
    assert rig["node"].alive()


def test_pose_jump(rig, request):
    """A relocalisation: the pose leaps 50 m and turns 180°; the node takes it as new ground."""
    _until_ok(rig, request, "an OK answer before the jump")
    keyframes = int(rig["diag"].get("keyframes"))
    jumped = np.diag([-1.0, -1.0, 1.0, 1.0])  # 180° about the optical axis
    jumped[:3, 3] = [50.0, -20.0, 3.0]
    f = plane_frame()
    t0 = float(next(_clock) * 10)
    stamps = [int((t0 + 0.1 * i) * _SECOND) for i in range(3)]
    for stamp in stamps:
        rig["pub"].publish(f["rgb"], f["depth"], f["k"], jumped, stamp)
        time.sleep(0.03)
    harness(request.config).wait_for(
        lambda: int(rig["diag"].get("keyframes")) > keyframes, 10, "the jumped frame as keyframe"
    )
    answer = _ask(rig)
    assert answer.code == Answer.OK, answer.message
    used = {stamp_to_ns(s) for s in answer.view_stamps}
    assert used & set(stamps), "the farthest (jumped) keyframe should be among the views"
    assert rig["node"].alive()
