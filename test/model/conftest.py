"""Shared tiny-model fixtures for the model tests (random weights, offline tokenizer)."""

from __future__ import annotations

import pytest
import torch

from llava3d_ros.model.loader import ModelBundle
from llava3d_ros.model.tiny import random_bundle, write_checkpoint

torch.set_num_threads(2)


@pytest.fixture(scope="session")
def bundle() -> ModelBundle:
    # std 0.3 makes a 2-layer model's output depend on its input, so cache bugs change tokens
    return random_bundle(seed=1, std=0.3)


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory, bundle):
    """(model dir, vision dir) of the tiny model in the released on-disk format."""
    return write_checkpoint(bundle, tmp_path_factory.mktemp("ckpt") / "tiny-llava3d")
