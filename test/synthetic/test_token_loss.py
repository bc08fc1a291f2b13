"""The token-category loss: right tokens and labels, it trains, and its head is not saved."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from llava3d_ros.model.loader import weight_files
from llava3d_ros.synthetic.batches import TurnEncoder, build_batch
from llava3d_ros.synthetic.feature_probe import voxel_features, voxel_objects
from llava3d_ros.synthetic.scenes import CATEGORIES
from llava3d_ros.synthetic.token_loss import category_head, token_loss, token_targets
from llava3d_ros.synthetic.train import (
    TrainConfig,
    pick_tasks,
    train,
)


@pytest.fixture(scope="module")
def setup(tiny_scenes):
    bundle, scenes, tok = tiny_scenes.bundle, tiny_scenes.scenes, tiny_scenes.bundle.tokenizer
    rng = random.Random(3)
    tasks = [pick_tasks(s.sample, tiny_scenes.cfg.kinds, 3, rng) for s in scenes]
    orders = [rng.randrange(2**31) for _ in scenes]
    return bundle, TurnEncoder(tok), scenes, tasks, orders


def test_targets_are_the_scene_tokens_of_objects_with_their_category(setup):
    bundle, encoder, scenes, tasks, orders = setup
    with torch.no_grad():
        embeds, _ = build_batch(bundle, encoder, scenes, tasks, orders)
    seqs, positions, labels = token_targets(encoder, scenes, tasks, orders)
    assert len(labels) > 10
    for b, scene in enumerate(scenes):
        objects = voxel_objects(scene)
        keep = np.flatnonzero(objects >= 0)
        mine = seqs == b
        assert mine.sum() == len(keep)
        names = [scene.sample.names[i].split()[-1] for i in objects[keep]]
        assert [CATEGORIES[c] for c in labels[mine]] == names
        tokens = voxel_features(bundle, scene, "tokens")
        torch.testing.assert_close(embeds[b, positions[mine]], tokens[keep])


def test_the_loss_trains_the_tokens_and_the_head(setup):
    bundle, encoder, scenes, tasks, orders = setup
    targets = token_targets(encoder, scenes, tasks, orders)
    head = category_head(bundle.lm.config.hidden_size, seed=0)
    params = [*head.parameters(), *bundle.lm.model.mm_projector.parameters()]
    opt = torch.optim.Adam(params, lr=1e-2)
    losses = []
    for _ in range(60):
        embeds, _ = build_batch(bundle, encoder, scenes, tasks, orders)
        loss = token_loss(head, embeds, targets)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.5 * losses[0]


def test_train_logs_it_and_saves_no_head(tiny_scenes, tmp_path):
    samples, cfg0, data = tiny_scenes.samples, tiny_scenes.cfg, tiny_scenes.data
    plain, with_loss = tmp_path / "plain", tmp_path / "token"
    for out, weight in ((plain, 0.0), (with_loss, 1.0)):
        cfg = TrainConfig(**{**cfg0.__dict__, "steps": 2, "batch": 2, "token_loss": weight})
        _, log = train(cfg, samples, data, out, progress=False)
    assert all(np.isfinite(r["token_loss"]) for r in log)
    keys = [set(load_file(f)) for d in (plain, with_loss) for f in weight_files(d)]
    assert set().union(*keys[: len(keys) // 2]) == set().union(*keys[len(keys) // 2 :])
