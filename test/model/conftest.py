"""Shared tiny-model fixtures for the model tests (random weights, offline tokenizer)."""

from __future__ import annotations

import pytest
import torch

from llava3d_ros.model.loader import ModelBundle
from llava3d_ros.model.tiny import random_bundle, write_checkpoint

# One thread: these models are tiny, and two threads wait on each other whenever anything else
# wants a core (test/model alone: 47 s with two, 35 s with one; in a loaded full run one test
# took 21 s with two that takes 0.5 s alone).
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def bundle() -> ModelBundle:
    # std 0.3 makes a 2-layer model's output depend on its input, so cache bugs change tokens
    return random_bundle(seed=1, std=0.3)


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory, bundle):
    """(model dir, vision dir) of the tiny model in the released on-disk format."""
    return write_checkpoint(bundle, tmp_path_factory.mktemp("ckpt") / "tiny-llava3d")
