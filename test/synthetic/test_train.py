"""train(init=...): going on from a checkpoint (the shipped model) keeps it, then trains it."""

from __future__ import annotations

import filecmp
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from llava3d_ros.model.loader import weight_files
from llava3d_ros.synthetic.dataset import DataConfig, generate
from llava3d_ros.synthetic.train import TrainConfig, train

EMBEDDED = Path(__file__).resolve().parents[2] / "llava3d_ros" / "assets" / "tiny_model"


def _weights(directory: Path) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for f in weight_files(directory):
        out.update(load_file(f))
    return out


@pytest.fixture(scope="module")
def shipped_data() -> DataConfig:
    """The shipped model's image geometry, as eval-synthetic derives it."""
    from llava3d_ros.model.loader import load_bundle
    from llava3d_ros.synthetic.evaluate import data_config_for

    return data_config_for(load_bundle(EMBEDDED, EMBEDDED / "vision_tower", dtype="fp32"))


@pytest.fixture(scope="module")
def samples(shipped_data):
    return generate([300_000], shipped_data)


def test_init_from_the_shipped_model_keeps_it(samples, shipped_data, tmp_path):
    cfg = TrainConfig(steps=1, batch=1, questions=1, lr=0.0, warmup=1)
    train(cfg, samples, shipped_data, tmp_path, progress=False, init=EMBEDDED)
    before, after = _weights(EMBEDDED), _weights(tmp_path)
    assert before.keys() == after.keys()
    for k in before:
        torch.testing.assert_close(after[k].float(), before[k].float(), msg=k)
    assert filecmp.cmp(EMBEDDED / "tokenizer.model", tmp_path / "tokenizer.model", shallow=False)


def test_init_trains_every_part_after_the_tower(samples, shipped_data):
    cfg = TrainConfig(steps=2, batch=1, questions=2, lr=1e-3, warmup=1)
    bundle, log = train(cfg, samples, shipped_data, None, progress=False, init=EMBEDDED)
    assert len(log) == 2 and all(torch.isfinite(torch.tensor(r["loss"])) for r in log)
    before = _weights(EMBEDDED)
    state = bundle.lm.state_dict()
    for name in ("model.embed_tokens.weight", "model.layers.0.self_attn.q_proj.weight"):
        assert not torch.equal(state[name].float(), before[name].float()), name
    pos = [k for k in before if "position_embedding_head" in k and k.endswith("weight")]
    assert pos and any(not torch.equal(state[k].float(), before[k].float()) for k in pos)


def test_init_refuses_other_image_geometry(samples, tmp_path):
    data = DataConfig(resolution=56)
    with pytest.raises(ValueError, match="112 px"):
        train(TrainConfig(steps=1), samples, data, None, progress=False, init=EMBEDDED)


def test_cli_image_geometry_reaches_the_checkpoint_and_eval(tmp_path):
    from llava3d_ros.model.loader import load_bundle
    from llava3d_ros.synthetic.evaluate import data_config_for
    from llava3d_ros.synthetic.train import main

    out = tmp_path / "ckpt"
    args = ["--data", "300000", "--out", str(out), "--steps", "1", "--batch", "1"]
    args += ["--hidden", "32", "--layers", "1", "--heads", "2", "--mm-hidden", "16"]
    args += ["--vision-hidden", "16", "--workers", "1"]
    main([*args, "--views", "4", "--resolution", "112", "--patch", "16"])
    bundle = load_bundle(out, out / "vision_tower", dtype="fp32")
    assert data_config_for(bundle) == DataConfig(n_views=4, resolution=112, patch=16)


def test_cli_refuses_a_patch_that_does_not_tile_the_image(tmp_path):
    from llava3d_ros.synthetic.train import main

    with pytest.raises(SystemExit):
        main(["--data", "300000", "--out", str(tmp_path), "--patch", "15"])


def test_cli_surface_clicks_and_binding_loss_reach_the_run(tmp_path):
    import csv
    import json

    from llava3d_ros.synthetic.train import main

    out = tmp_path / "ckpt"
    args = ["--data", "300000", "--out", str(out), "--steps", "2", "--batch", "2"]
    args += ["--hidden", "32", "--layers", "2", "--heads", "2", "--mm-hidden", "16"]
    args += ["--vision-hidden", "16", "--workers", "1", "--kinds", "color"]
    main([*args, "--clicks", "surface", "--bind-loss", "0.5"])
    meta = json.loads((out / "training" / "meta.json").read_text())
    assert meta["data"]["clicks"] == "surface" and meta["train"]["bind_loss"] == 0.5
    rows = list(csv.DictReader((out / "training" / "log.csv").open()))
    assert len(rows) == 2 and all(float(r["bind_loss"]) > 0 for r in rows)
    with pytest.raises(ValueError, match="needs >= 2 layers"):
        main([*args, "--layers", "1", "--bind-loss", "0.5"])


def test_tower_frozen_by_default_and_trained_with_train_vision(samples, shipped_data, tmp_path):
    tower = load_file(EMBEDDED / "vision_tower" / "model.safetensors")
    moved = {}
    for flag in (False, True):
        cfg = TrainConfig(steps=2, batch=2, questions=2, lr=1e-3, warmup=1, train_vision=flag)
        out = tmp_path / str(flag)
        train(cfg, samples, shipped_data, out, progress=False, init=EMBEDDED)
        written = load_file(out / "vision_tower" / "model.safetensors")
        assert written.keys() == tower.keys()
        moved[flag] = [k for k in tower if not torch.equal(written[k].float(), tower[k].float())]
    assert moved[False] == []
    # the patch embedding and the first layer feed the selected features; the last layer does not
    assert any("patch_embedding" in k for k in moved[True])
    assert any("layers.0." in k for k in moved[True])
