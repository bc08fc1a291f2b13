"""The synthetic evaluation answers each scene from its own tokens, even when frame ids and poses repeat."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import llava3d_ros.model.engine as engine_module
from llava3d_ros.model.engine import Engine
from llava3d_ros.synthetic.dataset import DataConfig, sample_from_scene
from llava3d_ros.synthetic.evaluate import score_sample
from llava3d_ros.synthetic.scenes import make_scene, recolored
from llava3d_ros.synthetic.train import TrainConfig, build_model
from llava3d_ros.synthetic.vocab import build_tokenizer


@pytest.fixture
def first_logits(monkeypatch) -> list[torch.Tensor]:
    """The logits each answer's decoding starts from, in call order."""
    seen: list[torch.Tensor] = []
    decode = engine_module.decode

    def spy(lm, cache, logits, *args, **kwargs):
        seen.append(logits.detach().reshape(-1, logits.shape[-1])[-1].clone())
        return decode(lm, cache, logits, *args, **kwargs)

    monkeypatch.setattr(engine_module, "decode", spy)
    return seen


def test_recoloured_room_from_the_same_poses_is_not_answered_from_the_cache(first_logits) -> None:
    data = DataConfig(n_views=2, resolution=56, patch=8, kinds=("color",))
    room = make_scene(3)
    rng = np.random.default_rng(0)
    a, b = (sample_from_scene(recolored(room, rng), data, 7) for _ in range(2))
    assert np.array_equal(a.patch_xyz, b.patch_xyz) and not np.array_equal(a.images, b.images)
    tok = build_tokenizer([t.question for t in a.tasks] + [t.answer for t in a.tasks])
    cfg = TrainConfig(hidden=32, layers=1, heads=2, mm_hidden=16, vision_hidden=16)
    bundle = build_model(cfg, tok, data, "cpu")
    n = len(b.tasks)

    score_sample(Engine(bundle), b, max_new_tokens=1)
    own = first_logits[-n:]
    engine = Engine(bundle)
    score_sample(engine, a, max_new_tokens=1)
    score_sample(engine, b, max_new_tokens=1)
    after_a = first_logits[-n:]
    for x, y in zip(own, after_a, strict=True):
        torch.testing.assert_close(x, y)

    # what the evaluation did before forgetting between scenes: room b read from room a's prefix
    stale = Engine(bundle)
    q = b.tasks[0]
    stale.answer(a.model_views(), q.question, "", list(q.clicks), 1)
    stale.answer(b.model_views(), q.question, "", list(q.clicks), 1)
    assert stale.prefix_hits == 1
    assert not torch.allclose(first_logits[-1], own[0])


def test_cli_views_reach_the_scenes_and_the_report(tmp_path, capsys) -> None:
    import json

    from llava3d_ros.synthetic.evaluate import main

    out = tmp_path / "r.json"
    main(
        ["--seeds", "200000", "--ablations", "none", "--views", "3", "--workers", "1"]
        + ["--clicks", "surface", "--json", str(out)]
    )
    assert "1 held-out scenes (200000), 3 views, clicks: surface" in capsys.readouterr().out
    assert json.loads(out.read_text())["none"]["questions"] > 0
    with pytest.raises(SystemExit):
        main(["--seeds", "200000", "--views", "-1"])
