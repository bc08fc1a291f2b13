"""The click-binding loss: right token positions, and the model's own layer-0 attention."""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace

import numpy as np
import pytest
import torch

from llava3d_ros.geometry.voxels import VoxelAssignment, pool_features
from llava3d_ros.synthetic.batches import TurnEncoder, build_batch, scene_order
from llava3d_ros.synthetic.binding import (
    binding_loss,
    binding_targets,
    capture_input,
    query_loss,
    query_targets,
    read_loss,
    read_targets,
)
from llava3d_ros.synthetic.dataset import DataConfig
from llava3d_ros.synthetic.train import (
    TrainConfig,
    pick_tasks,
    train,
)

DATA = DataConfig(n_views=3, resolution=48, patch=8, clicks="surface")
CFG = TrainConfig(hidden=32, layers=2, heads=2, mm_hidden=16, vision_hidden=16, max_scene_tokens=60)


@contextmanager
def _eager(lm) -> Iterator[None]:
    """Eager attention (the only kind that returns its weights) while inside the block."""
    impl = lm.config._attn_implementation
    lm.config._attn_implementation = "eager"
    try:
        yield
    finally:
        lm.config._attn_implementation = impl


@pytest.fixture(scope="module")
def batch(tiny_scenes):
    bundle, samples, scenes = tiny_scenes.bundle, tiny_scenes.samples, tiny_scenes.scenes
    tok = bundle.tokenizer
    rng = random.Random(3)
    picks = [2, 0, 1, 2]
    tasks = [pick_tasks(samples[i], CFG.kinds, 4, rng) for i in picks]
    orders = [rng.randrange(2**31) for _ in picks]
    encoder = TurnEncoder(tok)
    picked = [scenes[i] for i in picks]
    embeds, _ = build_batch(bundle, encoder, picked, tasks, orders)
    targets = binding_targets(encoder, picked, tasks, orders, margin=0.1)
    return bundle, picked, tasks, orders, embeds, targets


def test_targets_point_at_the_click_tokens_and_the_clicked_objects_voxels(batch):
    bundle, scenes, tasks, orders, embeds, targets = batch
    clicks = [(b, t) for b, ts in enumerate(tasks) for t in ts for _ in range(len(t.clicks))]
    assert len(targets) == len(clicks) > 0  # surface clicks: every clicked object has tokens
    for target, (b, task) in zip(targets, clicks, strict=True):
        assert target.sequence == b
        want = bundle.lm.click_tokens(torch.from_numpy(task.clicks))[0]
        assert torch.allclose(embeds[b, target.click], want, atol=1e-6)
        # back from sequence positions to voxels: all in the clicked object's box (+10 cm)
        scene = scenes[b]
        perm = scene_order(scene.num_voxels, orders[b]).numpy()
        first_scene = _scene_start(embeds[b], bundle, scene, perm)
        voxels = perm[target.object_tokens - first_scene]
        box = scene.sample.boxes[task.target]
        lo, hi = box[:3] - box[3:] / 2 - 0.1, box[:3] + box[3:] / 2 + 0.1
        assert np.all((scene.centers[voxels] >= lo) & (scene.centers[voxels] <= hi))
        # and no voxel of that box is left out
        inside = np.all((scene.centers >= lo) & (scene.centers <= hi), axis=1)
        assert set(voxels) == set(np.flatnonzero(inside))


def _scene_start(seq: torch.Tensor, bundle, scene, perm: np.ndarray) -> int:
    """Sequence position of the first scene token (found by matching its embedding)."""
    lm = bundle.lm
    empty = torch.empty(0)
    pooled = pool_features(
        scene.feats + lm.patch_pos_mlp(scene.xyz),
        VoxelAssignment(scene.patch_to_voxel, empty, empty, scene.num_voxels),
    )
    first = lm.model.mm_projector(pooled)[perm[0]]
    hits = [i for i in range(len(seq)) if torch.allclose(seq[i], first, atol=1e-5)]
    assert len(hits) == 1
    return hits[0]


def test_loss_is_the_models_own_head0_attention_in_layers_0_and_1(batch):
    bundle, _, _, _, embeds, targets = batch
    lm = bundle.lm
    with _eager(lm), torch.no_grad(), capture_input(lm.model.layers[1]) as layer1_input:
        att = lm(inputs_embeds=embeds, output_attentions=True).attentions  # (B, heads, T, T)
        loss = binding_loss(bundle, embeds, layer1_input[0], targets)
    for t in targets:  # the answer is read after its click
        assert t.click < t.answer
    hop1 = [float(att[0][t.sequence, 0, t.click, t.object_tokens].sum()) for t in targets]
    hop2 = [float(att[1][t.sequence, 0, t.answer, t.click]) for t in targets]
    want = -0.5 * (np.mean(np.log(hop1)) + np.mean(np.log(hop2)))
    assert float(loss) == pytest.approx(want, rel=1e-4)
    # head 1 attends elsewhere: the comparison above really singles out head 0
    other = [float(att[0][t.sequence, 1, t.click, t.object_tokens].sum()) for t in targets]
    assert not np.allclose(other, hop1, rtol=1e-2)


def test_training_with_the_loss_points_both_heads_where_it_should(batch):
    _, scenes, _, _, _, _ = batch
    samples = [s.sample for s in scenes[:3]]
    cfg = replace(
        CFG, steps=120, batch=3, questions=2, kinds=("color",), bind_loss=1.0, warmup=5, lr=3e-3
    )
    _, log = train(cfg, samples, DATA, None, progress=False)
    first = np.mean([r["bind_loss"] for r in log[:5]])
    last = np.mean([r["bind_loss"] for r in log[-5:]])
    assert last < 0.25 * first, (first, last)


def test_query_targets_point_grounding_and_count_answers_at_the_described_objects(batch):
    bundle, scenes, _, _, _, _ = batch
    encoder, tok = TurnEncoder(bundle.tokenizer), bundle.tokenizer
    table = bundle.lm.get_input_embeddings()
    tasks = []  # per scene: a grounding question, then a count whose answer is not 0
    for s in scenes:
        ground = next(t for t in s.sample.tasks if t.kind == "ground")
        count = next(t for t in s.sample.tasks if t.kind == "count" and t.answer != "0")
        tasks.append([ground, count])
    orders = [11, 12, 13, 14]
    embeds, _ = build_batch(bundle, encoder, scenes, tasks, orders)
    rows = query_targets(encoder, scenes, tasks, orders, margin=0.1)
    for b, (scene, (ground, count)) in enumerate(zip(scenes, tasks, strict=True)):
        mine = [r for r in rows if r[0] == b]
        perm = scene_order(scene.num_voxels, orders[b]).numpy()
        first = _scene_start(embeds[b], bundle, scene, perm)
        # each row's position is followed by the answer token it predicts
        answers = tok.sp.encode(ground.answer) + [tok.eos_id], tok.sp.encode(count.answer)[:1]
        wanted = [*answers[0], *answers[1]]
        assert len(mine) == len(wanted)
        for (_, pos, _), token in zip(mine, wanted, strict=True):
            assert torch.allclose(embeds[b, pos + 1], table(torch.tensor(token)), atol=1e-6)
        # grounding rows: the described object's voxels (box + 10 cm), all of them
        for _, _, keys in mine[:-1]:
            assert set(perm[keys - first]) == set(_inside(scene, [ground.target]))
        # the count row: the voxels of every object of the counted category
        category = count.question.split()[2][:-1]
        same = [i for i, n in enumerate(scene.sample.names) if n.split()[-1] == category]
        assert len(same) == int(count.answer)
        assert set(perm[mine[-1][2] - first]) == set(_inside(scene, same))
    # a count of 0 has no objects to attend to: no row
    zeros = [
        (s, [t]) for s in scenes for t in s.sample.tasks if t.kind == "count" and t.answer == "0"
    ]
    assert zeros
    picked, zero_tasks = zip(*zeros, strict=True)
    assert query_targets(encoder, list(picked), list(zero_tasks), [0] * len(zeros), 0.1) == []


def _inside(scene, objects: list[int]) -> np.ndarray:
    """Voxels whose centre lies in any of the objects' boxes grown by 10 cm."""
    inside = np.zeros(scene.num_voxels, dtype=bool)
    for box in scene.sample.boxes[objects]:
        lo, hi = box[:3] - box[3:] / 2 - 0.1, box[:3] + box[3:] / 2 + 0.1
        inside |= np.all((scene.centers >= lo) & (scene.centers <= hi), axis=1)
    return np.flatnonzero(inside)


def test_query_loss_is_head_1_of_layer_1(batch):
    bundle, scenes, tasks, orders, embeds, _ = batch
    lm = bundle.lm
    rows = query_targets(TurnEncoder(bundle.tokenizer), scenes, tasks, orders, margin=0.1)
    assert rows
    with _eager(lm), torch.no_grad(), capture_input(lm.model.layers[1]) as layer1_input:
        att = lm(inputs_embeds=embeds, output_attentions=True).attentions
        loss = query_loss(bundle, layer1_input[0], rows)
    mass = [float(att[1][b, 1, p, keys].sum()) for b, p, keys in rows]
    assert float(loss) == pytest.approx(-np.mean(np.log(mass)), rel=1e-4)
    head0 = [float(att[1][b, 0, p, keys].sum()) for b, p, keys in rows]
    assert not np.allclose(head0, mass, rtol=1e-2)


def test_training_with_the_query_loss_points_head_1_at_the_described_objects(batch):
    _, scenes, _, _, _, _ = batch
    samples = [s.sample for s in scenes[:3]]
    cfg = replace(
        CFG,
        steps=120,
        batch=3,
        questions=2,
        kinds=("ground", "count"),
        query_loss=1.0,
        warmup=5,
        lr=3e-3,
    )
    _, log = train(cfg, samples, DATA, None, progress=False)
    first = np.mean([r["query_loss"] for r in log[:5] if "query_loss" in r])
    last = np.mean([r["query_loss"] for r in log[-5:] if "query_loss" in r])
    assert last < 0.4 * first, (first, last)  # no gradient: it stays near the start


def test_read_targets_point_the_query_positions_at_the_describing_words(batch):
    bundle, scenes, _, _, _, _ = batch
    encoder, tok = TurnEncoder(bundle.tokenizer), bundle.tokenizer
    table = bundle.lm.get_input_embeddings()
    tasks = []  # per scene: a grounding question (colour named where possible), then a count
    for s in scenes:
        grounds = [t for t in s.sample.tasks if t.kind == "ground"]
        ground = max(grounds, key=lambda t: len(t.question.split('"')[1].split()))
        count = next(t for t in s.sample.tasks if t.kind == "count" and t.answer != "0")
        tasks.append([ground, count])
    orders = [11, 12, 13, 14]
    embeds, _ = build_batch(bundle, encoder, scenes, tasks, orders)
    rows = read_targets(encoder, scenes, tasks)
    queried = query_targets(encoder, scenes, tasks, orders, margin=0.1)
    # the same query positions as the described-object loss, in the same order
    assert [(b, p) for b, p, _ in rows] == [(b, p) for b, p, _ in queried]
    for b, (ground, count) in enumerate(tasks):
        mine = [r for r in rows if r[0] == b]
        phrase = [w for w in ground.question.split('"')[1].split() if w != "the"]
        plural = count.question.split()[2]
        for i, (_, pos, keys) in enumerate(mine):
            words = phrase if i < len(mine) - 1 else [plural]
            assert len(keys) == len(words) and all(keys < pos)
            # each key holds the embedding of its word's token, in the question's order
            for key, word in zip(keys, words, strict=True):
                token = tok.sp.piece_to_id("\u2581" + word)
                assert torch.allclose(embeds[b, key], table(torch.tensor(token)), atol=1e-6)
    assert any(len(r[2]) >= 2 for r in rows)  # some phrase names more than the category


def test_read_loss_is_head_1_of_layer_0_and_training_lowers_it(batch):
    bundle, scenes, tasks, _, embeds, _ = batch
    lm = bundle.lm
    rows = read_targets(TurnEncoder(bundle.tokenizer), scenes, tasks)
    assert rows
    with _eager(lm), torch.no_grad():
        att = lm(inputs_embeds=embeds, output_attentions=True).attentions
        loss = read_loss(bundle, embeds, rows)
    mass = [float(att[0][b, 1, p, keys].sum()) for b, p, keys in rows]
    assert float(loss) == pytest.approx(-np.mean(np.log(mass)), rel=1e-4)
    head0 = [float(att[0][b, 0, p, keys].sum()) for b, p, keys in rows]
    assert not np.allclose(head0, mass, rtol=1e-2)

    samples = [s.sample for s in scenes[:3]]
    kinds = ("ground", "count")
    cfg = replace(
        CFG, steps=80, batch=3, questions=2, kinds=kinds, read_loss=1.0, warmup=5, lr=3e-3
    )
    _, log = train(cfg, samples, DATA, None, progress=False)
    first = np.mean([r["read_loss"] for r in log[:5] if "read_loss" in r])
    last = np.mean([r["read_loss"] for r in log[-5:] if "read_loss" in r])
    assert last < 0.4 * first, (first, last)
