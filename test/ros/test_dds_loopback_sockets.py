"""The loopback profile is in force, whichever Fast DDS the ROS 2 distribution ships.

Fast DDS 2 (Jazzy) and 3 (Kilted) read the profile from differently named variables; a profile
that is silently not loaded leaves sockets on every interface and multicast discovery, and
large best-effort images get lost (only the other tests' symptoms would show it).
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from llava3d_ros.ros.dds import loopback_env

pytestmark = pytest.mark.ros

_NODE = """
import json, time, psutil, rclpy
rclpy.init(); n = rclpy.create_node("socket_probe")
time.sleep(0.5)
print(json.dumps(sorted({c.laddr.ip for c in psutil.Process().net_connections(kind="inet")})))
"""


def test_a_node_binds_loopback_only() -> None:
    env = loopback_env()
    out = subprocess.run(
        [sys.executable, "-c", _NODE], env=env, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    addresses = json.loads(out.stdout.strip().splitlines()[-1])
    assert addresses, out.stdout
    assert set(addresses) <= {"127.0.0.1"}, f"DDS sockets outside loopback: {addresses}"
    assert "deprecated" not in out.stderr, out.stderr
