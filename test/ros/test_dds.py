"""The loopback profile: processes discover each other however many participants share a domain."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from llava3d_ros.ros.dds import LOOPBACK_PROFILE, loopback_env

# A process holding N participants (one per context), one offering a service, one calling it.
_CROWD = """
import sys, time, rclpy
nodes = []  # kept: a participant lives as long as a node of its context
for i in range(int(sys.argv[1])):
    c = rclpy.Context(); rclpy.init(context=c); nodes.append(rclpy.create_node(f"c{i}", context=c))
print("ready", flush=True); time.sleep(60)
"""
_SERVER = """
import time, rclpy
from rcl_interfaces.srv import ListParameters
rclpy.init(); n = rclpy.create_node("server")
n.create_service(ListParameters, "/dds_test", lambda req, res: res)
print("ready", flush=True); rclpy.spin(n)
"""
_CLIENT = """
import rclpy
from rcl_interfaces.srv import ListParameters
rclpy.init(); n = rclpy.create_node("client")
found = n.create_client(ListParameters, "/dds_test").wait_for_service(timeout_sec=15)
print("found" if found else "not found", flush=True)
"""


def _start(code: str, env: dict[str, str], *args: str) -> subprocess.Popen:
    p = subprocess.Popen(
        [sys.executable, "-c", code, *args], env=env, stdout=subprocess.PIPE, text=True
    )
    assert p.stdout is not None and p.stdout.readline().strip() == "ready"
    return p


def test_profile_has_no_multicast_and_only_loopback():
    xml = LOOPBACK_PROFILE.read_text()
    assert "<address>127.0.0.1</address>" in xml and "ulticastLocatorList" not in xml
    assert "<useBuiltinTransports>false</useBuiltinTransports>" in xml


def test_discovery_with_many_participants_on_the_host():
    """Regression: with Fast DDS's default initial-peers range (4 participant ids), a server and
    a client that both got ids >= 4 never met, and a CLI query on a busy test machine hung."""
    env = loopback_env(domain_id=1 + (int(os.environ["ROS_DOMAIN_ID"]) + 50) % 101)  # its own
    crowd = _start(_CROWD, env, "5")  # participant ids 0..4 taken
    server = None
    try:
        server = _start(_SERVER, env)  # id 5
        t0 = time.monotonic()
        out = subprocess.run(
            [sys.executable, "-c", _CLIENT], env=env, capture_output=True, text=True, timeout=60
        )  # id 6
        assert out.stdout.strip() == "found", out.stdout + out.stderr
        assert time.monotonic() - t0 < 30
    finally:
        for p in (server, crowd):
            if p is not None:
                p.kill()
                p.wait()
