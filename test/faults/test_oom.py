"""Out of memory in a node process (injected): retried from fewer views, then full views again."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from llava3d_ros.msg import Answer
from llava3d_ros.ros.client import make_prompt

from .conftest import harness, node_rig, plane_frame

pytestmark = [pytest.mark.ros, pytest.mark.slow]
SECOND = 1_000_000_000


@pytest.fixture(scope="module")
def rig(node_factory, ros_context):
    with node_rig(
        node_factory,
        ros_context,
        "max_new_tokens:=4",
        "num_views:=8",
        "diagnostics_period_s:=0.2",
        name="llava3d-oom",
        args=(str(Path(__file__).with_name("oom_node.py")), "--autostart"),
    ) as r:
        yield r["node"], r["client"], r["pub"], r["diag"]


def test_out_of_memory_retries_with_fewer_views_then_recovers(rig, request):
    node, client, pub, diag = rig
    f = plane_frame()

    def eight_keyframes() -> bool:
        for i in range(8):  # 0.3 m apart: each a keyframe; resent until all have arrived
            pose = np.eye(4)
            pose[0, 3] = 0.3 * i
            pub.publish(f["rgb"], f["depth"], f["k"], pose, (eight_keyframes.n + i) * SECOND)
        eight_keyframes.n += 10
        return int(diag.get("keyframes")) >= 8

    eight_keyframes.n = 1
    harness(request.config).wait_for(eight_keyframes, 40, "8 keyframes in /diagnostics", 0.5)
    stages: list[str] = []
    answer, _ = client.ask(
        make_prompt("what is here?"), timeout=60, on_feedback=lambda fb: stages.append(fb.stage)
    )
    assert answer.code == Answer.OK, answer.message
    assert len(answer.view_stamps) == 2
    assert "out of memory with 8, then 4 views; answered from 2 views" in answer.warnings
    assert stages.count("retrying") == 2
    again = client.query(make_prompt("what is here?"), timeout=60)
    assert again.code == Answer.OK and len(again.view_stamps) == 8 and not again.warnings
    assert "out of memory with 8, then 4 views" in node.output()  # and in the log
    assert node.alive()
