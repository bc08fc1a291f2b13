"""Dataset through the scene core, .npz round trip, tokenizer and packed-sequence encoding."""

from __future__ import annotations

import numpy as np
import pytest

from llava3d_ros.model.prompts import BOX_TOKEN_INDEX, IMAGE_TOKEN_INDEX
from llava3d_ros.synthetic.dataset import (
    DataConfig,
    generate,
    load_npz,
    make_sample,
    parse_seeds,
    save_npz,
)
from llava3d_ros.synthetic.render import render_scene
from llava3d_ros.synthetic.scenes import make_scene
from llava3d_ros.synthetic.tasks import format_box
from llava3d_ros.synthetic.train import encode_turns
from llava3d_ros.synthetic.vocab import build_tokenizer

CFG = DataConfig(n_views=3, resolution=48, patch=8)


def test_patch_positions_match_rendered_geometry():
    sample = make_sample(7, CFG)
    assert sample.images.shape == (3, 48, 48, 3)
    assert sample.patch_xyz.shape == (3, 6, 6, 3) and sample.patch_valid.all()
    scene = make_scene(7)
    # Every patch lands inside the room (on the floor, a wall, the ceiling or an object).
    xyz = sample.patch_xyz.reshape(-1, 3)
    assert np.all(np.abs(xyz[:, 0]) <= scene.width / 2 + 1e-3)
    assert np.all(np.abs(xyz[:, 1]) <= scene.depth / 2 + 1e-3)
    assert np.all((xyz[:, 2] >= -1e-3) & (xyz[:, 2] <= scene.height + 1e-3))
    # The scene core's images are the rendered ones (render size = model size: no resampling).
    rendered = render_scene(scene, 3, 48)
    np.testing.assert_array_equal(sample.images, rendered.rgb)
    np.testing.assert_allclose(sample.cam_to_world, rendered.cam_to_world, atol=1e-9)


def test_npz_round_trip(tmp_path):
    samples = generate([1, 2], CFG)
    path = tmp_path / "d.npz"
    save_npz(path, samples, CFG)
    cfg, back = load_npz(path)
    assert cfg == CFG
    for a, b in zip(samples, back, strict=True):
        np.testing.assert_array_equal(a.images, b.images)
        np.testing.assert_allclose(a.patch_xyz, b.patch_xyz, atol=2e-3)  # stored as float16
        assert [(t.question, t.answer) for t in a.tasks] == [
            (t.question, t.answer) for t in b.tasks
        ]
        assert all(
            np.array_equal(x.clicks, y.clicks) for x, y in zip(a.tasks, b.tasks, strict=True)
        )
        assert len(b.model_views()) == 3


def test_parse_seeds():
    assert parse_seeds("3-5,9") == [3, 4, 5, 9]
    for bad in ("5-3", "x", "", "-1"):
        with pytest.raises(ValueError):
            parse_seeds(bad)


def test_tokenizer_numbers_are_single_tokens_and_round_trip():
    tasks = [t for s in generate([0, 1], CFG) for t in s.tasks]
    tok = build_tokenizer([t.answer for t in tasks] + [t.question for t in tasks])
    box = format_box(np.array([-2.3, 0.04, 1.0, 0.5, 0.6, 1.1]))
    text = f"A red chair. It is localized at {box}."
    pieces = tok.sp.encode(text, out_type=str)
    assert "\u2581-2.3" not in pieces and "-2.3" in pieces  # right after "["
    assert {"\u25810.0", "\u25811.0", "\u25810.5", "\u25810.6", "\u25811.1"} <= set(pieces)
    assert tok.decode(tok.encode(text)) == text
    assert tok.bos_id == 1 and tok.eos_id == 2


def test_packed_turns_supervise_only_answers():
    sample = make_sample(3, CFG)
    tasks = [t for t in sample.tasks if t.kind in ("color", "count")][:3]
    tok = build_tokenizer([t.answer for t in tasks] + [t.question for t in tasks])
    pre, post, labels = encode_turns(tok, tasks)
    assert pre[0] == tok.bos_id and IMAGE_TOKEN_INDEX not in pre + post
    assert post.count(BOX_TOKEN_INDEX) == sum(len(t.clicks) for t in tasks)
    supervised = [t for t, lab in zip(post, labels, strict=True) if lab != -100]
    assert supervised == [t for t, lab in zip(post, labels, strict=True) if lab == t]
    expected = []
    for t in tasks:
        expected += tok.sp.encode(t.answer) + [tok.eos_id]
    assert supervised == expected


def test_click_mode_reaches_the_questions_and_survives_the_npz(tmp_path):
    inside = make_sample(7, CFG)
    surface_cfg = DataConfig(n_views=3, resolution=48, patch=8, clicks="surface")
    surface = make_sample(7, surface_cfg)
    clicked = [(a, b) for a, b in zip(inside.tasks, surface.tasks, strict=True) if len(a.clicks)]
    assert clicked and all(not np.allclose(a.clicks, b.clicks) for a, b in clicked)
    save_npz(tmp_path / "s.npz", [surface], surface_cfg)
    cfg, loaded = load_npz(tmp_path / "s.npz")
    assert cfg.clicks == "surface"
    np.testing.assert_array_equal(loaded[0].tasks[0].clicks, surface.tasks[0].clicks)
    with pytest.raises(ValueError, match="clicks must be one of"):
        DataConfig(clicks="centre")
