"""Sensor faults against a running node: dropout, a pose stream that stops or jumps, stamps going back.

Every step waits for what it expects: an answer, or a /diagnostics report gathered after the
step (``rig["reports"]``), never a fixed time. Counts are read only once the node is done with
every frame sent before (``_settle``), and compared as deltas from such a point, never as how
many frames of a batch DDS delivered (sensor topics are best effort).
"""

from __future__ import annotations

import itertools
import time

import numpy as np
import pytest

from llava3d_ros.msg import Answer
from llava3d_ros.ros.client import make_prompt
from llava3d_ros.ros.convert import stamp_to_ns

from .conftest import Report, harness, plane_frame

pytestmark = pytest.mark.ros

_SECOND = 1_000_000_000
# message time of this module's frames only moves forward (except where a test jumps it back),
# 10 s a batch: the first frame of each batch is a keyframe (keyframe_max_interval_s is 5 s)
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
        time.sleep(0.03)  # a camera's pace, not a synchronisation
    return stamp


def _ask(rig, timeout: float = 30.0) -> Answer:
    answer = rig["client"].query(make_prompt("what is in front of me?"), timeout=timeout)
    assert answer.code <= Answer.NOT_READY and (answer.success or answer.message)
    return answer


def _views(answer: Answer) -> set[int]:
    return {stamp_to_ns(s) for s in answer.view_stamps}


def _until_ok(rig, request, what: str, pose: bool = True) -> Answer:
    """Frames and questions until an OK answer (the first frames may go before DDS matched)."""
    answers: list[Answer] = []

    def ok() -> bool:
        _publish(rig, 3, pose=pose)
        answers.append(_ask(rig))
        return answers[-1].code == Answer.OK

    harness(request.config).wait_for(ok, 40, what, interval=0.2)
    return answers[-1]


def _settle(rig, request) -> tuple[Report, int]:
    """A report taken once the node is done with every frame sent so far, and a marker's stamp.

    The marker is a posed frame newer than all others: a keyframe, and the newest one, which
    every answer's views include. Each input topic is taken in order, a frame is emitted only
    after those before it (its pose also ends their wait for one) and frames are ingested in
    order, so once an answer uses the marker every earlier frame was synced or dropped, and
    ingested or refused. The report also counts the marker itself (one frame synced).
    """
    marker = _publish(rig, 1)
    harness(request.config).wait_for(
        lambda: marker in _views(_ask(rig)), 30, "an answer that uses the marker frame", 0.1
    )
    return rig["reports"].fresh(), marker


def _silent(report: Report) -> bool:
    """The node has received nothing for a while: every input rate is down to 0."""
    rates = [float(v) for k, v in report.values.items() if k.startswith("rate_hz.")]
    return bool(rates) and not any(rates)


def test_sensor_dropout_and_resumption(rig, request):
    _until_ok(rig, request, "a first OK answer")
    # every sensor silent until the node sees it (its 5 s rate window empties): no sync is
    # pending (all frames were posed), so frames_synced is final in this report
    quiet = rig["reports"].wait_for(_silent, 30, "every input rate to fall to 0")
    during = _ask(rig)  # the node answers from the frames it buffered
    assert during.code == Answer.OK, during.message
    assert rig["node"].alive()
    synced = quiet.count("frames_synced")
    _publish(rig, 5)  # sensors resume
    harness(request.config).wait_for(
        lambda: int(rig["diag"].get("frames_synced")) > synced, 20, "resumed frames to sync"
    )
    assert _ask(rig).code == Answer.OK


def test_pose_stream_stops(rig, request):
    _until_ok(rig, request, "an OK answer with poses")
    before, _ = _settle(rig, request)
    # 2 s of message time without a pose: each frame waits pose_wait_s (0.5 s), then is dropped
    _publish(rig, 20, pose=False)
    harness(request.config).wait_for(
        lambda: rig["diag"].drops("no pose") > before.drops("no pose"),
        20,
        "pose-less frames to be dropped for want of a pose",
    )
    still = _ask(rig)  # the buffer still holds the posed frames
    assert still.code == Answer.OK, still.message
    after, _ = _settle(rig, request)  # its pose ends the wait of the last pose-less frames
    assert after.drops("no pose") > before.drops("no pose"), after.values
    synced = after.count("frames_synced") - before.count("frames_synced")
    assert synced == 1, f"{synced - 1} frames without a pose were used (1 is the marker)"

    # poses resume: an OK answer alone proves nothing (the buffer answers), new frames must sync
    def resumed() -> bool:
        _publish(rig, 3)
        return int(rig["diag"].get("frames_synced")) > after.count("frames_synced")

    harness(request.config).wait_for(resumed, 30, "posed frames to sync again", interval=0.3)
    assert _ask(rig).code == Answer.OK


_NOT_NEWER = "colour stamp not newer"


def _rejected(values) -> int:  # noqa: ANN001 - a Report or the rig's Diagnostics
    """Frames refused: the synchroniser's drop or the scene buffer's out-of-order refusal."""
    return values.drops(_NOT_NEWER) + int(values.get("errors.frame"))


def test_clock_jump_backwards(rig, request):
    """Stamps going back: a little (out of order) is refused, far (time restarted) is followed."""
    h = harness(request.config)
    _until_ok(rig, request, "an OK answer before the step back")
    before, last = _settle(rig, request)
    # 0.25 s before the newest frame, under time_jump_threshold_s (0.5 s): out of order, refused
    _publish(rig, 3, start_s=last / _SECOND - 0.25)
    h.wait_for(
        lambda: rig["diag"].drops(_NOT_NEWER) > before.drops(_NOT_NEWER),
        20,
        "frames stamped before the newest one to be refused",
    )
    answer = _ask(rig)
    assert answer.code == Answer.OK, answer.message
    stepped, last = _settle(rig, request)
    synced = stepped.count("frames_synced") - before.count("frames_synced")
    assert synced == 1, f"{synced - 1} frames stamped in the past were used (1 is the marker)"
    assert stepped.count("time_jumps") == before.count("time_jumps"), "a step back is no restart"

    # a bag loop under use_sim_time: stamps restart 5 s in the past. The node starts a new time
    # line (time_jump_policy): it says so, and takes the frames, refusing none of them
    jumped = (last / _SECOND - 5.0 + 0.1 * i for i in range(40))  # 4 s: all still in the past

    def restarted() -> bool:
        t = next(jumped, None)
        if t is not None:
            _publish(rig, 1, start_s=t)
        return int(rig["diag"].get("time_jumps")) > stepped.count("time_jumps")

    h.wait_for(restarted, 20, "the node to see sensor time restart", interval=0.2)
    restart, _ = _settle(rig, request)  # the marker: every jumped frame is done with
    assert restart.count("time_jumps") == stepped.count("time_jumps") + 1, restart.values
    said = [v for k, v in restart.values.items() if k.startswith("warning.")]
    assert any("sensor time jumped back" in w for w in said), said
    # the first frame of the new time line comes before a second message confirms the
    # restart: that one alone is refused (see docs/interfaces.md, "Time that jumps back")
    refused = _rejected(restart) - _rejected(stepped)
    assert refused <= 1, f"{refused} frames of the new time line were refused"
    synced = restart.count("frames_synced") - stepped.count("frames_synced")
    assert synced >= 2, "no frame of the new time line was synced (1 is the marker)"
    answer = _ask(rig)
    assert answer.code == Answer.OK, answer.message

    # time moves forward again: frames are accepted, none refused, no new restart
    _publish(rig, 3)
    forward, _ = _settle(rig, request)
    assert _rejected(forward) == _rejected(restart), forward.values
    assert forward.count("time_jumps") == restart.count("time_jumps")
    synced = forward.count("frames_synced") - restart.count("frames_synced")
    assert synced >= 2, "no frame after the restart was synced (1 is the marker)"
    assert rig["node"].alive()


def test_pose_jump(rig, request):
    """A relocalisation: the pose leaps 50 m and turns 180°; the node takes it as new ground."""
    _until_ok(rig, request, "an OK answer before the jump")
    before, _ = _settle(rig, request)  # no earlier frame can become a keyframe after this
    jumped = np.diag([-1.0, -1.0, 1.0, 1.0])  # 180° about the optical axis
    jumped[:3, 3] = [50.0, -20.0, 3.0]
    f = plane_frame()
    t0 = float(next(_clock) * 10)
    stamps = [int((t0 + 0.1 * i) * _SECOND) for i in range(3)]
    for stamp in stamps:
        rig["pub"].publish(f["rgb"], f["depth"], f["k"], jumped, stamp)
        time.sleep(0.03)
    harness(request.config).wait_for(
        lambda: int(rig["diag"].get("keyframes")) > before.count("keyframes"),
        20,
        "the jumped frame as keyframe",
    )
    answer = _ask(rig)
    assert answer.code == Answer.OK, answer.message
    assert _views(answer) & set(stamps), (
        "the jumped keyframe (the newest, and the farthest) should be among the views"
    )
    assert rig["node"].alive()
