"""Keep DDS traffic on loopback: the environment for tests, demos and benchmarks."""

from __future__ import annotations

import importlib.metadata
import os
from collections.abc import Mapping
from pathlib import Path

LOOPBACK_PROFILE = Path(__file__).resolve().parents[1] / "assets" / "fastdds-loopback.xml"

# Variables that would override the profile's transports (rmw rebinds 0.0.0.0 when set),
# or re-run the PyPI wheels' bootstrap under the wrong interpreter.
_CONFLICTING = ("ROS_AUTOMATIC_DISCOVERY_RANGE", "ROS_STATIC_PEERS", "ROS_LOCALHOST_ONLY")


def profile_variable() -> str:
    """The variable through which this Fast DDS reads an XML profile file.

    Fast DDS 3 (Kilted and later) reads FASTDDS_DEFAULT_PROFILES_FILE; Fast DDS 2 (Humble,
    Jazzy) only FASTRTPS_DEFAULT_PROFILES_FILE, and ignores the profile otherwise (sockets on
    every interface, multicast discovery, images over 0.5 MB lost). Kilted's rmw warns about
    the old name, so only the one that counts is set.
    """
    try:  # the PyPI wheels: ros-fastrtps (2.x, Jazzy) or ros-fastdds (3.x, Kilted)
        fast_dds_2 = importlib.metadata.version("ros-fastrtps").startswith("2.")
    except importlib.metadata.PackageNotFoundError:  # a full ROS 2 install: its setup.bash
        fast_dds_2 = os.environ.get("ROS_DISTRO", "") in ("humble", "iron", "jazzy")
    return "FASTRTPS_DEFAULT_PROFILES_FILE" if fast_dds_2 else "FASTDDS_DEFAULT_PROFILES_FILE"


def default_domain_id() -> int:
    """A domain id derived from the process id, so parallel runs don't cross-talk (1..101)."""
    return 1 + os.getpid() % 101


def loopback_env(
    base: Mapping[str, str] | None = None, domain_id: int | None = None
) -> dict[str, str]:
    """Return ``base`` (default: os.environ) set up for loopback-only Fast DDS."""
    env = dict(os.environ if base is None else base)
    for name in _CONFLICTING:
        env.pop(name, None)
    env["RMW_IMPLEMENTATION"] = "rmw_fastrtps_cpp"
    env.pop("FASTDDS_DEFAULT_PROFILES_FILE", None)
    env.pop("FASTRTPS_DEFAULT_PROFILES_FILE", None)
    env[profile_variable()] = str(LOOPBACK_PROFILE)
    if domain_id is not None:
        env["ROS_DOMAIN_ID"] = str(domain_id)
    else:
        env.setdefault("ROS_DOMAIN_ID", str(default_domain_id()))
    return env


def use_loopback(domain_id: int | None = None) -> int:
    """Apply :func:`loopback_env` to this process (call before ``rclpy.init``); return the domain id."""
    env = loopback_env(domain_id=domain_id)
    os.environ.clear()
    os.environ.update(env)
    return int(env["ROS_DOMAIN_ID"])
