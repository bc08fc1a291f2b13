"""Limits as parameters, on a node process: per-client rate and image size (separate DDS peers).

The request limits (question length, clicks, views, new tokens) are in test_node_query's
bad-request battery; the pending-query limit in its six-callers test.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from llava3d_ros.msg import Answer
from llava3d_ros.ros.client import Llava3dClient, make_prompt

from .conftest import harness, plane_frame

pytestmark = pytest.mark.ros
SECOND = 1_000_000_000
_ids = itertools.count()


@pytest.fixture(scope="module")
def client(node_factory, ros_context):
    # 160x120 frames fit exactly; one query per 100 s after a burst of 2 per client
    node = node_factory(
        "max_new_tokens:=4",
        "max_image_pixels:=19200",
        "client_rate_hz:=0.01",
        "client_burst:=2",
        name="llava3d-limits",
    )
    c = Llava3dClient("/llava3d", ros_context)
    try:
        c.wait_for_node(60.0)
    except Exception:
        pytest.fail(f"node did not come up:\n{node.output()[-4000:]}")
    yield c, node
    c.close()


@pytest.fixture(scope="module")
def publisher(ros_context, client):
    import rclpy

    from llava3d_ros.ros.publish import FramePublisher

    pub_node = rclpy.create_node("limits_frame_publisher", context=ros_context)
    pub = FramePublisher(pub_node)
    assert pub.wait_for_subscribers(20.0)
    yield pub
    pub_node.destroy_node()


def _ask(c: Llava3dClient, client_id: str | None = None) -> Answer:
    cid = client_id if client_id is not None else f"probe-{next(_ids)}"  # a fresh allowance
    return c.query(make_prompt("what is here?", client_id=cid), timeout=30)


def test_image_over_max_image_pixels_is_dropped_and_reported(client, publisher, request):
    c, node = client
    big = plane_frame(width=320, height=240)
    stamps = itertools.count(SECOND, SECOND // 10)
    answers: list[Answer] = []

    def refused() -> bool:
        publisher.publish(big["rgb"], big["depth"], big["k"], big["pose"], next(stamps))
        answers.append(_ask(c))
        return "max_image_pixels=19200" in answers[-1].message

    harness(request.config).wait_for(refused, 30, "NO_SCENE naming max_image_pixels", 0.2)
    assert all(a.code == Answer.NO_SCENE for a in answers), [a.message for a in answers]
    assert "320x240" in answers[-1].message
    small = plane_frame()
    moved = np.eye(4)
    moved[0, 3] = 1.0

    def accepted() -> bool:
        publisher.publish(small["rgb"], small["depth"], small["k"], moved, next(stamps))
        return _ask(c).code == Answer.OK

    harness(request.config).wait_for(accepted, 30, "an OK answer from a 160x120 frame", 0.2)
    assert node.alive()


def test_client_rate_is_per_client_id(client):
    c, node = client
    first = [_ask(c, "greedy") for _ in range(2)]
    assert all(a.code != Answer.BUSY for a in first), [a.message for a in first]
    third = _ask(c, "greedy")
    assert third.code == Answer.BUSY
    assert "'greedy' exceeded client_rate_hz=0.01 (burst 2)" in third.message
    assert _ask(c, "polite").code != Answer.BUSY  # another client is unaffected
    anonymous = [_ask(c, "") for _ in range(3)]  # callers without an id share one allowance
    assert [a.code == Answer.BUSY for a in anonymous] == [False, False, True]
    assert "anonymous callers exceeded" in anonymous[2].message
    assert node.alive()
