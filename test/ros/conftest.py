"""ROS test fixtures: one node process per module (start-up costs seconds), in-process clients.

Built on the root harness (test/conftest.py): loopback-only DDS, this run's domain id, and
ProcessHandle for child processes whose logs are shown when a test fails.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image as PILImage

REPO = Path(__file__).resolve().parents[2]
SEVEN = REPO / ".." / "shared" / "data" / "7scenes-redkitchen"


def harness(config: pytest.Config):
    """The root conftest module (ProcessHandle, wait_for, loopback env, DOMAIN_ID)."""
    return config.pluginmanager.get_plugin(str(REPO / "test" / "conftest.py"))


@pytest.fixture(scope="module")
def node_factory(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[..., object]]:
    """Start ``llava3d-ros run --autostart`` processes shared by a module's tests."""
    h = harness(request.config)
    handles = []
    failed_before = request.session.testsfailed
    log_dir = tmp_path_factory.mktemp("nodes")

    def start(*ros_params: str, name: str = "node", args: tuple[str, ...] = ()) -> object:
        log = log_dir / f"{name}-{len(handles)}.log"
        env = h.loopback_env(domain_id=h.DOMAIN_ID)
        env["PYTHONUNBUFFERED"] = "1"
        cmd = [sys.executable, *(args or ("-m", "llava3d_ros.cli", "run", "--autostart"))]
        # The tiny random-weight model: its long, input-dependent noise exercises streaming
        # and cancel; a test that passes model_path loads that instead.
        ros_params = ("random_weights:=true", *ros_params)
        cmd += ["--ros-args", *[x for p in ros_params for x in ("-p", p)]]
        fh = open(log, "wb")  # noqa: SIM115 - closed with the process
        popen = subprocess.Popen(
            cmd, env=env, stdout=fh, stderr=subprocess.STDOUT, cwd=REPO, start_new_session=True
        )
        handle = h.ProcessHandle(popen, log)
        handles.append(handle)
        return handle

    yield start
    failed = request.session.testsfailed > failed_before
    for handle in handles:  # all at once: each spends a second or two exiting
        if handle.alive():
            handle.popen.send_signal(signal.SIGINT)
    for handle in handles:
        handle.stop()
        if failed:
            sys.stderr.write(f"\n----- {handle.log.name} -----\n{handle.output()[-6000:]}\n")


@pytest.fixture
def ctx() -> Iterator[object]:
    """A fresh rclpy context per test (for in-process nodes that must not share state)."""
    import rclpy

    c = rclpy.Context()
    rclpy.init(context=c)
    yield c
    rclpy.shutdown(context=c)


@pytest.fixture(scope="module")
def ros_context() -> Iterator[object]:
    """An rclpy context of this test process (loopback env is set by the root conftest)."""
    import rclpy

    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    yield ctx
    rclpy.shutdown(context=ctx)


def seven_scenes_frames(n: int | None = None) -> list[dict]:
    """The 7-Scenes redkitchen frames as arrays (skips the test when the data is absent)."""
    if not SEVEN.exists():
        pytest.skip(
            f"real RGB-D data not found at {SEVEN} (expected ../shared/data beside the repo)"
        )
    k = np.loadtxt(SEVEN / "camera-intrinsics.txt")
    out = []
    for color in sorted(SEVEN.glob("frame-*.color.png"))[:n]:
        stem = color.name.removesuffix(".color.png")
        out.append(
            {
                "rgb": np.asarray(PILImage.open(color).convert("RGB")),
                "depth": np.asarray(PILImage.open(SEVEN / f"{stem}.depth.png")).astype(np.uint16),
                "pose": np.loadtxt(SEVEN / f"{stem}.pose.txt"),
                "k": k,
                "index": int(stem.split("-")[1]),
            }
        )
    return out


def plane_frame(width: int = 160, height: int = 120, z: float = 2.0, seed: int = 0) -> dict:
    """A textured wall ``z`` metres in front of the camera (mm depth), camera at the origin."""
    rng = np.random.default_rng(seed)
    k = np.array([[100.0, 0, (width - 1) / 2], [0, 100.0, (height - 1) / 2], [0, 0, 1]])
    return {
        "rgb": rng.integers(0, 256, (height, width, 3), dtype=np.uint8),
        "depth": np.full((height, width), int(z * 1000), dtype=np.uint16),
        "pose": np.eye(4),
        "k": k,
    }


class Diagnostics:
    """The newest key/values of the node's /diagnostics statuses, merged into one dict."""

    def __init__(self, node) -> None:  # noqa: ANN001 - rclpy Node
        from diagnostic_msgs.msg import DiagnosticArray

        self._lock = threading.Lock()
        self.values: dict[str, str] = {}
        self.messages: dict[str, str] = {}
        node.create_subscription(DiagnosticArray, "/diagnostics", self._on, 10)

    def _on(self, msg) -> None:  # noqa: ANN001
        with self._lock:
            for status in msg.status:
                self.messages[status.name.split(": ")[-1]] = status.message
                self.values.update({kv.key: kv.value for kv in status.values})

    def get(self, key: str, default: str = "0") -> str:
        with self._lock:
            return self.values.get(key, default)

    def drops(self, prefix: str = "") -> int:
        with self._lock:
            return sum(
                int(v) for k, v in self.values.items() if k.startswith("sync_drops." + prefix)
            )


@contextlib.contextmanager
def node_rig(
    start_node, context, *ros_params: str, name: str, args: tuple[str, ...] = ()
) -> Iterator[dict]:  # noqa: ANN001 - the node_factory and ros_context fixtures' values
    """A node process + in-process client + frame publisher + /diagnostics reader."""
    import rclpy
    from rclpy.executors import SingleThreadedExecutor

    from llava3d_ros.ros.client import Llava3dClient
    from llava3d_ros.ros.publish import FramePublisher

    node = start_node(*ros_params, name=name, args=args)
    client = Llava3dClient("/llava3d", context)
    try:
        client.wait_for_node(60.0)
    except Exception:
        pytest.fail(f"node did not come up:\n{node.output()[-4000:]}")
    side = rclpy.create_node(f"{name.replace('-', '_')}_rig", context=context)
    pub = FramePublisher(side)
    diag = Diagnostics(side)
    ex = SingleThreadedExecutor(context=context)
    ex.add_node(side)
    threading.Thread(target=ex.spin, daemon=True).start()
    try:
        assert pub.wait_for_subscribers(20.0), "the node never subscribed to its inputs"
        yield {"node": node, "client": client, "pub": pub, "diag": diag, "side": side}
    finally:
        ex.shutdown(timeout_sec=2.0)
        side.destroy_node()
        client.close()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "case(name): which prepared node a bad-input test uses")
