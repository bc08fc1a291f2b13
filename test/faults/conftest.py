"""Fault tests: a node per module, an in-process client, a frame publisher and a /diagnostics reader."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from ros.conftest import (  # noqa: F401 - fixtures
    node_factory,
    node_rig,
    plane_frame,
    ros_context,
)

REPO = Path(__file__).resolve().parents[2]


def harness(config: pytest.Config):
    """The root conftest module (ProcessHandle, wait_for, DOMAIN_ID, shared_data)."""
    return config.pluginmanager.get_plugin(str(REPO / "test" / "conftest.py"))


@pytest.fixture(scope="module")
def rig(node_factory, ros_context, request) -> Iterator[dict]:  # noqa: F811
    """A node (tiny random model, 8 tokens, fast diagnostics) + client + publisher + diagnostics.

    Every frame is taken (``ingest_rate_hz:=0``): the fault tests count frames and drops.
    """
    with node_rig(
        node_factory,
        ros_context,
        "ingest_rate_hz:=0.0",
        "max_new_tokens:=8",
        "diagnostics_period_s:=0.2",
        "max_pending_queries:=4",
        name="llava3d",
    ) as r:
        yield r
