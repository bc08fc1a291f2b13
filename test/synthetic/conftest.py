"""Shared fixture: a tiny random model with three prepared scenes (the attention-loss tests')."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
import torch

from llava3d_ros.model.loader import ModelBundle
from llava3d_ros.synthetic.batches import PreparedScene, prepare_scene
from llava3d_ros.synthetic.dataset import DataConfig, SceneSample, generate
from llava3d_ros.synthetic.train import TrainConfig, build_model, scene_features
from llava3d_ros.synthetic.vocab import build_tokenizer

TINY_DATA = DataConfig(n_views=3, resolution=48, patch=8, clicks="surface")
TINY_CFG = TrainConfig(
    hidden=32, layers=2, heads=2, mm_hidden=16, vision_hidden=16, max_scene_tokens=60
)


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread() -> Iterator[None]:
    """One torch thread for every module here (set before its module fixtures train).

    These models are tiny: a second thread gains nothing, and two threads wait on each other
    whenever anything else wants a core. On two loaded cores 40 steps of the query-loss
    training took 1.0 s of CPU with one thread and 29 s with two (the CI saw 61 s for 120).
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@dataclass
class TinyScenes:
    bundle: ModelBundle
    samples: list[SceneSample]
    scenes: list[PreparedScene]
    data: DataConfig = field(default_factory=lambda: TINY_DATA)
    cfg: TrainConfig = field(default_factory=lambda: TINY_CFG)


@pytest.fixture(scope="module")
def tiny_scenes() -> TinyScenes:
    torch.manual_seed(0)
    samples = generate([4, 5, 6], TINY_DATA)
    tok = build_tokenizer([x for s in samples for t in s.tasks for x in (t.question, t.answer)])
    bundle = build_model(TINY_CFG, tok, TINY_DATA, "cpu")
    scenes = [
        prepare_scene(s, scene_features(bundle, s), voxel_size=0.2, max_tokens=60, seed=0)
        for s in samples
    ]
    return TinyScenes(bundle, samples, scenes)
