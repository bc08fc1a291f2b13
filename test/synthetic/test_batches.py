"""One-pass training batches equal the per-sequence path they replace."""

from __future__ import annotations

import random

import pytest
import torch

from llava3d_ros.synthetic.batches import TurnEncoder, build_batch, prepare_scene
from llava3d_ros.synthetic.dataset import DataConfig, generate
from llava3d_ros.synthetic.train import (
    TrainConfig,
    batch_loss,
    build_model,
    encode_turns,
    pad_batch,
    pick_tasks,
    scene_features,
    sequence_embeds,
)
from llava3d_ros.synthetic.vocab import build_tokenizer

DATA = DataConfig(n_views=3, resolution=48, patch=8)
CFG = TrainConfig(hidden=32, layers=1, heads=2, mm_hidden=16, vision_hidden=16, max_scene_tokens=40)


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    samples = generate([4, 5, 6], DATA)
    texts = [x for s in samples for t in s.tasks for x in (t.question, t.answer)]
    tok = build_tokenizer(texts)
    bundle = build_model(CFG, tok, DATA, "cpu")
    feats = [scene_features(bundle, s) for s in samples]
    return samples, tok, bundle, feats


def test_turn_encoder_equals_encode_turns(setup):
    samples, tok, _, _ = setup
    encoder = TurnEncoder(tok)
    rng = random.Random(1)
    for _ in range(2):  # the second pass comes from the caches
        for s in samples:
            tasks = pick_tasks(s, CFG.kinds, 5, rng)
            assert encoder.encode(tasks) == encode_turns(tok, tasks)


@pytest.mark.parametrize("shuffle", [True, False])
def test_batch_equals_per_sequence_embeddings(setup, shuffle):
    samples, tok, bundle, feats = setup
    rng = random.Random(2)
    picks = [2, 0, 2, 1]  # a scene twice: voxel offsets and click rows must still line up
    tasks = [pick_tasks(samples[i], CFG.kinds, 4, rng) for i in picks]
    orders = [rng.randrange(2**31) if shuffle else None for _ in picks]
    scenes = [
        prepare_scene(s, f, voxel_size=CFG.voxel_size, max_tokens=CFG.max_scene_tokens, seed=0)
        for s, f in zip(samples, feats, strict=True)
    ]
    assert any(s.num_voxels == CFG.max_scene_tokens for s in scenes)  # the cap is exercised
    embeds, labels = build_batch(
        bundle, TurnEncoder(tok), [scenes[i] for i in picks], tasks, orders
    )
    ref_e, ref_l = pad_batch(
        bundle,
        [
            sequence_embeds(bundle, feats[i], samples[i], t, CFG, o)
            for i, t, o in zip(picks, tasks, orders, strict=True)
        ],
    )
    assert embeds.shape == ref_e.shape
    torch.testing.assert_close(embeds, ref_e, rtol=1e-5, atol=1e-6)
    assert torch.equal(labels, ref_l)
    # and gradients reach the 3D position MLP and the click encoder through the gather
    loss, _ = batch_loss(bundle, embeds, labels)
    loss.backward()
    for mlp in (bundle.lm.patch_pos_mlp, bundle.lm.click_encoder):
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in mlp.parameters())
    bundle.lm.zero_grad(set_to_none=True)
