"""The node with an engine that runs out of memory (injected) twice with more than two views.

Started by test_oom.py as ``python oom_node.py --autostart --ros-args ...``: the same
``llava3d_node`` entry point with an engine factory that installs ``Engine.fault_hook``.
"""

from __future__ import annotations

import sys

import torch

from llava3d_ros.ros import node

FAILURES = 2  # the first two prefills of > 2 views fail, as a GPU short of memory would


def engine_factory(settings):  # noqa: ANN001, ANN201 - node.EngineFactory
    engine = node._default_engine_factory(settings)
    left = [FAILURES]

    def hook(stage: str, n_views: int) -> None:
        if stage == "prefill" and n_views > 2 and left[0] > 0:
            left[0] -= 1
            raise torch.OutOfMemoryError(f"CUDA out of memory with {n_views} views (injected)")

    engine.fault_hook = hook
    return engine


if __name__ == "__main__":
    sys.exit(node.main(engine_factory=engine_factory))
