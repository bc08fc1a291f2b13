"""The readout loss and focused sampling: right rows, it trains, no head saved, draws as asked."""

from __future__ import annotations

import random
from dataclasses import replace

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from llava3d_ros.model.loader import weight_files
from llava3d_ros.synthetic.batches import TurnEncoder, build_batch
from llava3d_ros.synthetic.binding import capture_output
from llava3d_ros.synthetic.readout import readout_head, readout_loss, readout_targets
from llava3d_ros.synthetic.train import draw_tasks, pick_tasks, train


@pytest.fixture(scope="module")
def setup(tiny_scenes):
    bundle, scenes = tiny_scenes.bundle, tiny_scenes.scenes
    rng = random.Random(5)
    kinds = ("ground", "count", "color")
    tasks = [pick_tasks(s.sample, kinds, 6, rng) for s in scenes]
    orders = [rng.randrange(2**31) for _ in scenes]
    return bundle, TurnEncoder(bundle.tokenizer), scenes, tasks, orders


def test_rows_are_the_answer_writing_positions_with_their_facts(setup):
    bundle, encoder, scenes, tasks, orders = setup
    centres, counts = readout_targets(encoder, scenes, tasks)
    _, labels = build_batch(bundle, encoder, scenes, tasks, orders)
    grounds = [t for ts in tasks for t in ts if t.kind == "ground"]
    assert grounds and len(counts) == sum(t.kind == "count" for ts in tasks for t in ts)
    for b, pos, centre in centres:  # each predicts a supervised answer token …
        assert labels[b, pos + 1] != -100
        assert any(np.allclose(centre, t.box[:3]) for t in tasks[b] if t.kind == "ground")
    box_tokens = sum(len(encoder.tok.sp.encode(t.answer)) + 1 for t in grounds)
    assert len(centres) == box_tokens  # … and every token of every box answer (with </s>)
    for b, pos, count in counts:
        answer = encoder.tok.sp.encode(str(count))
        assert int(labels[b, pos + 1]) == answer[0]


def test_the_loss_trains_layer_one_and_the_head(setup):
    bundle, encoder, scenes, tasks, orders = setup
    centres, counts = readout_targets(encoder, scenes, tasks)
    head = readout_head(bundle.lm.config.hidden_size, seed=0)
    layer1 = bundle.lm.model.layers[1]
    params = [*head.parameters(), *layer1.parameters()]
    saved = [p.detach().clone() for p in layer1.parameters()]
    opt = torch.optim.Adam(params, lr=3e-3)
    losses = []
    for _ in range(80):
        embeds, _ = build_batch(bundle, encoder, scenes, tasks, orders)
        with capture_output(layer1) as out:
            bundle.lm(inputs_embeds=embeds)
        loss = readout_loss(head, out[0], centres, counts)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    with torch.no_grad():
        for p, s in zip(layer1.parameters(), saved, strict=True):
            p.copy_(s)  # the module-scoped fixture's model is shared with other tests
    assert losses[-1] < 0.5 * losses[0]


def test_an_empty_batch_gives_zero():
    head = readout_head(8, seed=0)
    assert float(readout_loss(head, torch.randn(1, 4, 8), [], [])) == 0.0


def test_focus_draws(tiny_scenes):
    sample, cfg = tiny_scenes.samples[0], tiny_scenes.cfg
    cfg = replace(cfg, questions=1)
    plain = [pick_tasks(sample, cfg.kinds, 1, random.Random(s)) for s in range(20)]
    same = [draw_tasks(sample, cfg.kinds, cfg, random.Random(s)) for s in range(20)]
    assert plain == same  # no focus: sampling unchanged
    only = replace(cfg, focus=("count",), focus_share=1.0)
    drawn = [draw_tasks(sample, cfg.kinds, only, random.Random(s)) for s in range(20)]
    assert all(t.kind == "count" for ts in drawn for t in ts)
    half = replace(cfg, focus=("count",), focus_share=0.5)
    rng = random.Random(0)
    kinds = [draw_tasks(sample, cfg.kinds, half, rng)[0].kind for _ in range(400)]
    share = kinds.count("count") / len(kinds)
    base = sum(t.kind == "count" for t in sample.tasks) / len(sample.tasks)
    assert abs(share - (0.5 + 0.5 * base)) < 0.08


def test_train_logs_it_and_saves_no_head(tiny_scenes, tmp_path):
    samples, cfg0, data = tiny_scenes.samples, tiny_scenes.cfg, tiny_scenes.data
    plain, with_loss = tmp_path / "plain", tmp_path / "readout"
    for out, weight in ((plain, 0.0), (with_loss, 1.0)):
        cfg = replace(cfg0, steps=3, batch=3, readout_loss=weight, focus=("ground", "count"))
        _, log = train(replace(cfg, focus_share=1.0), samples, data, out, progress=False)
    assert all(np.isfinite(r["readout_loss"]) for r in log)
    keys = [set(load_file(f)) for d in (plain, with_loss) for f in weight_files(d)]
    assert set().union(*keys[: len(keys) // 2]) == set().union(*keys[len(keys) // 2 :])
    with pytest.raises(ValueError, match="focus"):
        train(replace(cfg0, steps=1, focus=("nonsense",)), samples, data, None, progress=False)
