"""Fault tests: a node per module, an in-process client, a frame publisher and a /diagnostics reader."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from ros.conftest import node_factory, plane_frame, ros_context  # noqa: F401 - fixtures

REPO = Path(__file__).resolve().parents[2]


def harness(config: pytest.Config):
    """The root conftest module (ProcessHandle, wait_for, DOMAIN_ID, shared_data)."""
    return config.pluginmanager.get_plugin(str(REPO / "test" / "conftest.py"))


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


@pytest.fixture(scope="module")
def rig(node_factory, ros_context, request) -> Iterator[dict]:  # noqa: F811
    """A node (tiny random model, 8 tokens, fast diagnostics) + client + publisher + diagnostics."""
    with node_rig(
        node_factory,
        ros_context,
        "max_new_tokens:=8",
        "diagnostics_period_s:=0.2",
        "max_pending_queries:=4",
        name="llava3d",
    ) as r:
        yield r
