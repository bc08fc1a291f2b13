"""``llava3d-ros replay BAG`` for a robot's rosbag2: played as recorded (bytes unchanged).

The bags are written with ``rosbags`` (``robot_bag.py``): TF tree, JPEG colour, PNG
compressedDepth, camera_info, no PoseStamped. A small sqlite3 one is checked against an
in-process subscriber (bytes, names, ``--map``, the merged latched ``/tf_static``, skipped
types, ``--loop``); an mcap one of real 7-Scenes frames feeds a node with compressed inputs
and TF poses, and a pixel click on a replayed frame lands on that frame's own depth.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

from llava3d_ros.ros.bag_replay import open_bag
from llava3d_ros.ros.convert import ns_to_stamp

from .conftest import REPO, Diagnostics, harness, seven_scenes_frames
from .robot_bag import (
    COLOR,
    COLOR_INFO,
    DEPTH,
    DEPTH_INFO,
    NODE_MAPS,
    OPTICAL,
    frame_stamp,
    write_robot_bag,
)

pytestmark = [pytest.mark.ros]

RELIABLE = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
LATCHED = QoSProfile(
    depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL
)


def _small_frames(n: int = 3) -> list[dict]:
    rng = np.random.default_rng(1)
    k = np.array([[50.0, 0.0, 31.5], [0.0, 50.0, 23.5], [0.0, 0.0, 1.0]])
    out = []
    for i in range(n):
        pose = np.eye(4)
        pose[0, 3] = 0.05 * i
        depth = rng.integers(500, 4000, (48, 64)).astype(np.uint16)
        depth[0, 0] = 0
        rgb = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
        out.append({"rgb": rgb, "depth": depth, "pose": pose, "k": k, "index": 30 + i})
    return out


def _recorded(bag: Path) -> dict[str, list[bytes]]:
    """Each topic's CDR bytes in receive order."""
    out: dict[str, list[bytes]] = {}
    with open_bag(bag) as reader:
        for conn, _, raw in reader.messages():
            out.setdefault(conn.topic, []).append(bytes(raw))
    return out


def _unpadded(got: list[bytes], sent: list[bytes]) -> list[bytes]:
    """``got`` less the zero bytes Fast DDS pads a serialized message with (to 4 bytes)."""
    out = []
    for g, s in zip(got, sent, strict=True):
        tail = g[len(s) :]
        out.append(g[: len(s)] if len(tail) < 4 and not tail.strip(b"\x00") else g)
    return out


class RawInbox:
    def __init__(self) -> None:
        self.msgs: list = []
        self._lock = threading.Lock()

    def __call__(self, msg) -> None:
        with self._lock:
            self.msgs.append(msg)

    def count(self) -> int:
        with self._lock:
            return len(self.msgs)


def test_sqlite3_bag_plays_as_recorded(ros_context, ros_env, tmp_path, request) -> None:
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.serialization import deserialize_message
    from sensor_msgs.msg import CameraInfo, CompressedImage
    from tf2_msgs.msg import TFMessage

    h = harness(request.config)
    bag = tmp_path / "robot_sqlite3"
    write_robot_bag(bag, _small_frames(), storage="sqlite3", unknown_topic=True)
    recorded = _recorded(bag)
    assert (bag / "robot_sqlite3.db3").is_file()

    node = rclpy.create_node("bag_listener", context=ros_context)
    inbox = {name: RawInbox() for name in ("color", "depth", "info", "tf", "static")}
    node.create_subscription(CompressedImage, "/front/color", inbox["color"], RELIABLE, raw=True)
    node.create_subscription(CompressedImage, DEPTH, inbox["depth"], RELIABLE, raw=True)
    node.create_subscription(CameraInfo, "/rgb/camera_info", inbox["info"], RELIABLE, raw=True)
    node.create_subscription(TFMessage, "/tf", inbox["tf"], RELIABLE, raw=True)
    node.create_subscription(TFMessage, "/tf_static", inbox["static"], LATCHED)
    ex = SingleThreadedExecutor(context=ros_context)
    ex.add_node(node)
    threading.Thread(target=ex.spin, daemon=True).start()
    try:
        t0 = time.monotonic()
        done = h.run_cli(
            ["replay", str(bag), "--rate", "0.5", "--wait-subscribers", "20"]
            + ["--map", f"{COLOR}=/front/color", "--map", f"{COLOR_INFO}=rgb/camera_info"],
            ros_env,
            timeout=60,
        )
        took = time.monotonic() - t0
        assert done.returncode == 0, done.stdout + done.stderr
        out = done.stdout
        assert f"replaying rosbag2 {bag} as recorded: 19 messages, 6 topics" in out, out
        assert f"  {COLOR} -> /front/color (sensor_msgs/msg/CompressedImage, 3 messages)" in out
        assert f"  {COLOR_INFO} -> /rgb/camera_info (sensor_msgs/msg/CameraInfo" in out
        assert f"  {DEPTH} (sensor_msgs/msg/CompressedImage, 3 messages)" in out  # not renamed
        assert "/tf_static (tf2_msgs/msg/TFMessage, 3 messages, 2 transforms merged)" in out
        assert re.search(r"^replayed 19 messages in [\d.]+ s", out, re.M), out
        assert (
            "skipping /robot/status: message type robot_status_msgs/msg/Status is not "
            "available here" in done.stderr
        )
        # receive times span 0.52 s; at --rate 0.5 the playing takes twice that
        assert float(re.search(r"replayed 19 messages in ([\d.]+) s", out).group(1)) >= 0.9
        assert took < 30

        h.wait_for(lambda: inbox["color"].count() == 3, 10, "the colour images")
        h.wait_for(lambda: inbox["tf"].count() == len(recorded["/tf"]), 10, "every /tf message")
        # the recorded bytes, unchanged
        assert _unpadded(inbox["color"].msgs, recorded[COLOR]) == recorded[COLOR]
        assert _unpadded(inbox["depth"].msgs, recorded[DEPTH]) == recorded[DEPTH]
        assert _unpadded(inbox["info"].msgs, recorded[COLOR_INFO]) == recorded[COLOR_INFO]
        assert _unpadded(inbox["tf"].msgs, recorded["/tf"]) == recorded["/tf"]
        h.wait_for(lambda: inbox["static"].count() >= 1, 10, "the latched /tf_static")
        static = inbox["static"].msgs[-1]
        pairs = {(t.header.frame_id, t.child_frame_id) for t in static.transforms}
        assert pairs == {("base_link", "camera_link"), ("camera_link", OPTICAL)}
        assert inbox["static"].count() == 1  # one merged message, not one per recording

        # while the bag held three separate ones (two broadcasters, one repeated)
        first_static = deserialize_message(recorded["/tf_static"][0], TFMessage)
        assert len(recorded["/tf_static"]) == 3 and len(first_static.transforms) == 1
    finally:
        ex.shutdown(timeout_sec=2.0)
        node.destroy_node()


def test_loop_repeats_the_bag(ros_env, tmp_path) -> None:
    bag = tmp_path / "robot_loop"
    write_robot_bag(bag, _small_frames(), storage="mcap")
    popen = subprocess.Popen(
        [sys.executable, "-m", "llava3d_ros.cli", "replay", str(bag), "--loop", "--rate", "4"]
        + ["--wait-subscribers", "0.1"],
        env=ros_env,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        assert popen.stdout is not None
        lines: list[str] = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            line = popen.stdout.readline()
            if not line:
                break
            lines.append(line.rstrip("\n"))
            if re.fullmatch(r"loop ([2-9]|\d\d+) done: 19 messages\n", line):
                break
        popen.send_signal(signal.SIGINT)
        out, err = popen.communicate(timeout=30)
    finally:
        if popen.poll() is None:
            popen.kill()
            popen.wait()
    lines += out.splitlines()
    # loops shorter than a second are said at most once a second
    assert "loop 1 done: 19 messages" in lines, "\n".join(lines) + err
    assert any(re.fullmatch(r"loop ([2-9]|\d\d+) done: 19 messages", ln) for ln in lines), (
        "\n".join(lines) + err
    )
    assert re.fullmatch(
        r"replayed \d+ messages in [\d.]+ s \([\d.]+ Hz mean\), \d+ loops", lines[-1]
    )


def test_bag_arguments_refused(request, ros_env, tmp_path) -> None:
    from scene import readers_fixtures as fx

    h = harness(request.config)
    bag = tmp_path / "robot"
    write_robot_bag(bag, _small_frames(2), storage="mcap")
    fast = ["--wait-subscribers", "0.1"]
    done = h.run_cli(["replay", str(bag), "--map", "/nope=rgb/image", *fast], ros_env, timeout=60)
    assert done.returncode == 2, done.stderr
    assert "--map names topics the bag does not hold: /nope (topics: " in done.stderr
    done = h.run_cli(["replay", str(bag), "--map", "just_a_topic", *fast], ros_env, timeout=60)
    assert done.returncode == 2 and "expected FROM=TO" in done.stderr, done.stderr
    done = h.run_cli(["replay", str(bag), "--stamp-offset-s", "3", *fast], ros_env, timeout=60)
    assert done.returncode == 2 and "--stamp-offset-s does not apply" in done.stderr
    done = h.run_cli(["replay", "--synthetic", "0", "--map", "/a=b", *fast], ros_env, timeout=60)
    assert done.returncode == 2 and "apply to a rosbag2 source only" in done.stderr

    # a bag of raw Image + PoseStamped topics is still read into frames ...
    raw_bag = tmp_path / "raw_bag"
    fx.write_bag(raw_bag)
    done = h.run_cli(["replay", str(raw_bag), "--rate", "10", *fast], ros_env, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "replaying rosbag2" in done.stdout and "replayed 3 frames" in done.stdout
    # ... unless asked to play it as recorded
    done = h.run_cli(
        ["replay", str(raw_bag), "--as-recorded", "--rate", "10", *fast], ros_env, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert "as recorded" in done.stdout and "replayed 207 messages" in done.stdout, done.stdout


def _node_has_compressed_transports() -> bool:
    from llava3d_ros.ros.params import PARAMS

    names = {p.name for p in PARAMS}
    return {"rgb_transport", "depth_transport"} <= names


def _truth(f: dict, u: float, v: float) -> np.ndarray:
    d = f["depth"][int(round(v)), int(round(u))] / 1000.0
    k = f["k"]
    cam = np.array([(u - k[0, 2]) * d / k[0, 0], (v - k[1, 2]) * d / k[1, 1], d, 1.0])
    return (f["pose"] @ cam)[:3]


@pytest.mark.slow
def test_robot_bag_feeds_a_compressed_tf_posed_node(
    node_factory, spawn, ros_context, tmp_path, request
) -> None:
    import rclpy

    from llava3d_ros.msg import Answer, Click, Prompt
    from llava3d_ros.ros.client import Llava3dClient

    from .test_replay_click import _smooth_pixel

    if not _node_has_compressed_transports():
        pytest.skip("the node has no rgb_transport/depth_transport parameters yet")
    h = harness(request.config)
    frames = seven_scenes_frames()
    bag = tmp_path / "robot.mcap.d"
    stamps = write_robot_bag(bag, frames, storage="mcap")
    assert next(bag.glob("*.mcap"))
    node = node_factory(
        "rgb_transport:=compressed",
        "depth_transport:=compressedDepth",
        "world_frame:=map",
        "sensor_qos:=reliable",
        "ingest_rate_hz:=0.0",
        "keyframe_min_translation_m:=0.0",
        "keyframe_min_rotation_deg:=0.0",
        "max_new_tokens:=4",
        name="llava3d",
    )
    client = Llava3dClient("/llava3d", ros_context)
    side = rclpy.create_node("bag_test_side", context=ros_context)
    diag = Diagnostics(side)
    client._executor.add_node(side)
    try:
        client.wait_for_node(60)
        maps = [x for m in NODE_MAPS for x in ("--map", m)]
        replay = spawn(
            "-m",
            "llava3d_ros.cli",
            "replay",
            str(bag),
            *maps,
            "--wait-subscribers",
            "30",
            name="replay",
        )
        assert replay.popen.wait(90) == 0, replay.output()
        out = replay.output()
        assert f"{COLOR} -> /rgb/image/compressed" in out, out
        assert f"{DEPTH} -> /depth/image/compressedDepth" in out, out
        assert f"{DEPTH_INFO} -> /depth/camera_info" in out, out
        h.wait_for(
            lambda: int(diag.get("frames_synced")) >= len(frames),
            30,
            f"{len(frames)} frames synced",
        )
        i = len(frames) // 2
        f, t = frames[i], stamps[i]
        assert t == frame_stamp(f)
        u, v = _smooth_pixel(f["depth"])
        click = Click(kind=Click.PIXEL, u=u, v=v, stamp=ns_to_stamp(t))
        answer = client.query(
            Prompt(question="what is this?", clicks=[click], max_new_tokens=4), timeout=60
        )
        assert answer.code == Answer.OK, answer.message
        p = answer.click_points[0]
        miss = float(np.linalg.norm(np.array([p.x, p.y, p.z]) - _truth(f, u, v)))
        print(
            f"\nPIXEL click on replayed bag frame {i} (JPEG + PNG compressedDepth, pose via "
            f"TF): {miss * 100:.2f} cm from its surface"
        )
        assert miss < 0.03
        assert set(answer.view_frames) == {OPTICAL}
        assert node.alive()
    finally:
        client._executor.remove_node(side)
        side.destroy_node()
        client.close()
        node.stop()
