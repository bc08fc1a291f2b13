"""Bad-input battery: each bad sensor stream or request gets a coded answer; the node keeps running.

Sensor cases each run a fresh node process (no good frame may ever reach it), fed from this
process over loopback DDS; the query then reports NO_SCENE with the reason.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from geometry_msgs.msg import PoseStamped
from std_msgs.msg import Header

from llava3d_ros.msg import Answer
from llava3d_ros.ros.client import Llava3dClient, make_prompt
from llava3d_ros.ros.convert import array_to_image, matrix_to_pose, ns_to_stamp
from llava3d_ros.ros.publish import FramePublisher, camera_info

from .conftest import harness, plane_frame

pytestmark = [pytest.mark.ros, pytest.mark.slow]
SECOND = 1_000_000_000


CASES = ("encoding", "step", "depth", "size", "info", "absent", "order", "dup")


@pytest.fixture(scope="module")
def nodes(node_factory, tmp_path_factory):
    """One fresh node per case, all started at once (start-up is mostly imports), in namespaces."""
    procs = {
        case: node_factory(
            "max_new_tokens:=4",
            name=f"llava3d-{case}",
            args=(
                "-m",
                "llava3d_ros.cli",
                "run",
                "--autostart",
                "--ros-args",
                "-r",
                f"__ns:=/{case}",
            ),
        )
        for case in CASES
    }
    missing = tmp_path_factory.mktemp("models") / "no-such-model"
    procs["broken"] = node_factory(
        f"model_path:={missing}",
        name="llava3d-broken",
        args=(
            "-m",
            "llava3d_ros.cli",
            "run",
            "--autostart",
            "--ros-args",
            "-r",
            "__ns:=/broken",
        ),
    )
    return procs


@pytest.fixture
def rig(nodes, ros_context, request):
    """(node process, client, frame publisher) for this test's own node."""
    import rclpy

    case = request.node.get_closest_marker("case").args[0]
    client = Llava3dClient(f"/{case}/llava3d", ros_context)
    pub_node = rclpy.create_node(f"bad_input_publisher_{case}", context=ros_context)
    pub = FramePublisher(pub_node, prefix=f"/{case}")
    try:
        client.wait_for_node(60)
        assert pub.wait_for_subscribers(20)
        yield nodes[case], client, pub
    finally:
        pub_node.destroy_node()
        client.close()


def _expect_no_scene(request, rig, publish_bad, expected: str) -> Answer:
    """Publish bad input repeatedly until the NO_SCENE answer names ``expected``."""
    node, client, pub = rig
    answers: list[Answer] = []
    stamps = itertools.count(10 * SECOND, SECOND // 5)

    def check() -> bool:
        publish_bad(pub, next(stamps))
        answers.append(client.query(make_prompt("what is here?"), timeout=20))
        return expected in answers[-1].message

    harness(request.config).wait_for(
        check, 25, f"a NO_SCENE answer naming {expected!r}", interval=0.2
    )
    answer = answers[-1]
    assert answer.code == Answer.NO_SCENE and not answer.success
    assert all(a.code == Answer.NO_SCENE for a in answers)  # no bad frame ever became scene
    assert node.alive()
    return answer


def _pose(pub: FramePublisher, stamp: int, m: np.ndarray | None = None) -> None:
    msg = PoseStamped(header=Header(stamp=ns_to_stamp(stamp), frame_id="map"))
    msg.pose = matrix_to_pose(np.eye(4) if m is None else m)
    pub.pose.publish(msg)


@pytest.mark.case("encoding")
def test_wrong_encoding(rig, request):
    f = plane_frame()

    def bad(pub, stamp):
        img = array_to_image(f["rgb"], "rgb8", stamp, "cam")
        img.encoding = "yuv422"
        _pose(pub, stamp)
        pub.info.publish(camera_info(f["k"], 160, 120, stamp, "cam"))
        pub.depth.publish(array_to_image(f["depth"], "16UC1", stamp, "cam"))
        pub.rgb.publish(img)

    _expect_no_scene(request, rig, bad, "colour image encoding 'yuv422'")


@pytest.mark.case("step")
def test_step_size_mismatch(rig, request):
    f = plane_frame()

    def bad(pub, stamp):
        depth = array_to_image(f["depth"], "16UC1", stamp, "cam")
        depth.step = 100  # < 160 px * 2 bytes
        _pose(pub, stamp)
        pub.info.publish(camera_info(f["k"], 160, 120, stamp, "cam"))
        pub.depth.publish(depth)
        pub.rgb.publish(array_to_image(f["rgb"], "rgb8", stamp, "cam"))

    _expect_no_scene(request, rig, bad, "step 100 is smaller")


@pytest.mark.case("depth")
def test_nan_and_zero_depth(rig, request):
    f = plane_frame()
    depth = np.full((120, 160), np.nan, dtype=np.float32)
    depth[:, :80] = 0.0

    def bad(pub, stamp):
        pub.publish(f["rgb"], depth, f["k"], f["pose"], stamp)

    _expect_no_scene(request, rig, bad, "no valid depth")


@pytest.mark.case("size")
def test_colour_depth_size_mismatch(rig, request):
    f = plane_frame()
    depth = np.full((160, 160), 2000, dtype=np.uint16)  # square depth for a 4:3 colour image

    def bad(pub, stamp):
        pub.publish(f["rgb"], depth, f["k"], f["pose"], stamp)

    _expect_no_scene(request, rig, bad, "different aspect")


@pytest.mark.case("info")
def test_missing_camera_info(rig, request):
    f = plane_frame()

    def bad(pub, stamp):
        _pose(pub, stamp)
        pub.depth.publish(array_to_image(f["depth"], "16UC1", stamp, "cam"))
        pub.rgb.publish(array_to_image(f["rgb"], "rgb8", stamp, "cam"))

    _expect_no_scene(request, rig, bad, "no rgb/camera_info received")


@pytest.mark.case("absent")
def test_poses_absent(rig, request):
    f = plane_frame()

    def bad(pub, stamp):
        pub.publish(f["rgb"], f["depth"], f["k"], None, stamp)

    _expect_no_scene(request, rig, bad, "no pose received yet")


@pytest.mark.case("order")
def test_poses_out_of_order_and_far_from_the_images(rig, request):
    f = plane_frame()

    def bad(pub, stamp):
        # poses 3 s and 2 s before the image, sent newest first: out of order, and too far away
        _pose(pub, stamp - 2 * SECOND)
        _pose(pub, stamp - 3 * SECOND)
        pub.publish(f["rgb"], f["depth"], f["k"], None, stamp)

    answer = _expect_no_scene(request, rig, bad, "no pose within 50 ms")
    assert "pose" in answer.message


@pytest.mark.case("dup")
def test_duplicate_stamps(rig, request):
    f = plane_frame()

    def bad(pub, stamp):
        pub.info.publish(camera_info(f["k"], 160, 120, stamp, "cam"))
        for _ in range(2):  # colour twice with one stamp, no depth: never a frame
            pub.rgb.publish(array_to_image(f["rgb"], "rgb8", stamp, "cam"))

    _expect_no_scene(request, rig, bad, "duplicate color stamp")


def test_model_that_failed_to_load_is_not_ready(nodes, ros_context):
    client = Llava3dClient("/broken/llava3d", ros_context)
    try:
        client.wait_for_node(60)
        answer = client.query(make_prompt("what is here?"), timeout=20)
        assert answer.code == Answer.NOT_READY and not answer.success
        assert "failed to load" in answer.message and "no-such-model" in answer.message
        answer, _ = client.ask(make_prompt("and via the action?"), timeout=20)
        assert answer.code == Answer.NOT_READY
        assert nodes["broken"].alive()
    finally:
        client.close()
