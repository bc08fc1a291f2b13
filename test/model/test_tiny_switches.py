"""Tiny-model switches: click encoding (own encoder, or sharing the scene's position path), rope_theta."""

from __future__ import annotations

import math

import pytest
import torch

from llava3d_ros.model.config import ConfigError, llava_config, released_7b_config
from llava3d_ros.model.loader import load_bundle
from llava3d_ros.model.tiny import random_bundle, tiny_config, write_checkpoint
from llava3d_ros.synthetic.evaluate import ablation

VOCAB = 800


def _bundle(click_encoding: str):
    cfg = tiny_config(VOCAB, position_encoding="fourier_mlp", position_fourier_freqs=2)
    return random_bundle(cfg | {"click_encoding": click_encoding}, seed=3, std=0.3)


def test_release_config_keeps_its_own_click_encoder() -> None:
    assert llava_config(released_7b_config()).click_encoding == "mlp"
    with pytest.raises(ConfigError, match="click_encoding"):
        llava_config(released_7b_config() | {"click_encoding": "fourier"})


def test_shared_click_adds_the_projected_scene_position_code() -> None:
    plain, shared = _bundle("mlp"), _bundle("shared_position")
    shared.lm.load_state_dict(plain.lm.state_dict())  # same weights, only the switch differs
    xyz = torch.tensor([[0.5, -1.0, 0.8], [2.0, 1.5, 0.2]])
    with torch.no_grad():
        own = plain.lm.click_tokens(xyz)
        both = shared.lm.click_tokens(xyz)
        scene_code = shared.lm.model.mm_projector(shared.lm.patch_pos_mlp(xyz))
    assert own.shape == both.shape == (2, plain.lm.config.hidden_size)
    torch.testing.assert_close(both, own + scene_code)
    assert not torch.allclose(both, own)


def test_click_encoding_survives_the_checkpoint(tmp_path) -> None:
    bundle = _bundle("shared_position")
    model_dir, vision_dir = write_checkpoint(bundle, tmp_path / "m")
    again = load_bundle(model_dir, vision_dir, dtype="fp32", device="cpu")
    assert again.lm.config.click_encoding == "shared_position"
    xyz = torch.tensor([[0.1, 0.2, 0.3]])
    with torch.no_grad():
        torch.testing.assert_close(again.lm.click_tokens(xyz), bundle.lm.click_tokens(xyz))


@pytest.mark.parametrize("click_encoding", ["mlp", "shared_position"])
def test_zero_click_ablation_zeroes_every_click_token(click_encoding: str) -> None:
    bundle = _bundle(click_encoding)
    xyz = torch.tensor([[0.5, -1.0, 0.8], [2.0, 1.5, 0.2]])
    with torch.no_grad(), ablation(bundle, "zero_click"):
        assert torch.count_nonzero(bundle.lm.click_tokens(xyz)) == 0
    with torch.no_grad():  # and back afterwards
        assert torch.count_nonzero(bundle.lm.click_tokens(xyz)) > 0
    with torch.no_grad(), ablation(bundle, "zero_position"):
        scene_part = bundle.lm.model.mm_projector(bundle.lm.patch_pos_mlp(xyz))
        # the projector of a zero position code is its bias path alone: same for every point
        torch.testing.assert_close(scene_part[0], scene_part[1])


def test_rope_theta_survives_the_checkpoint(tmp_path) -> None:
    bundle = random_bundle(tiny_config(VOCAB, rope_theta=1e6), seed=3)
    model_dir, vision_dir = write_checkpoint(bundle, tmp_path / "m")
    again = load_bundle(model_dir, vision_dir, dtype="fp32", device="cpu")
    assert again.lm.config.rope_parameters["rope_theta"] == 1e6
    torch.testing.assert_close(
        again.lm.model.rotary_emb.inv_freq, bundle.lm.model.rotary_emb.inv_freq
    )
    default = random_bundle(seed=3).lm.model.rotary_emb.inv_freq
    assert again.lm.model.rotary_emb.inv_freq[-1] < default[-1] / 10


def test_fourier_wavelength_default_is_the_first_models_pi_per_metre() -> None:
    from llava3d_ros.model.llava3d import PositionMLP

    torch.manual_seed(0)
    mlp = PositionMLP(8, fourier_freqs=2)
    xyz = torch.tensor([[0.3, -1.2, 0.7]])
    # as the shipped model was trained: π and 2π rad/m, per axis
    ang = torch.stack([xyz[0] * math.pi, xyz[0] * 2 * math.pi], -1).flatten()
    want = mlp.position_embedding_head(torch.cat([xyz[0], ang.sin(), ang.cos()]))
    torch.testing.assert_close(mlp(xyz)[0], want)
    # 2 m apart: identical sin/cos at the default (only the raw xyz differs); not so at 16 m
    far = xyz + torch.tensor([[2.0, 0.0, 0.0]])
    long = PositionMLP(8, fourier_freqs=2, longest_wavelength=16.0)
    with torch.no_grad():
        for m in (mlp, long):
            m.position_embedding_head[0].weight[:, :3] = 0.0  # blind to the raw xyz
    torch.testing.assert_close(mlp(far), mlp(xyz))
    assert not torch.allclose(long(far), long(xyz), atol=1e-3)


def test_fourier_wavelength_checked_and_kept(tmp_path) -> None:
    with pytest.raises(ConfigError, match="position_fourier_wavelength"):
        llava_config(released_7b_config() | {"position_fourier_wavelength": 0.0})
    cfg = tiny_config(VOCAB, position_encoding="fourier_mlp", position_fourier_freqs=3)
    bundle = random_bundle(cfg | {"position_fourier_wavelength": 16.0}, seed=3)
    assert bundle.lm.patch_pos_mlp.longest_wavelength == 16.0
    model_dir, vision_dir = write_checkpoint(bundle, tmp_path / "m")
    again = load_bundle(model_dir, vision_dir, dtype="fp32", device="cpu")
    assert again.lm.click_encoder.longest_wavelength == 16.0
    xyz = torch.tensor([[0.1, 0.2, 0.3]])

    def tokens(b):
        one = torch.ones(1, dtype=torch.bool)
        return b.lm.scene_tokens(
            torch.zeros(1, 32), xyz, one, voxel_size=0.2, max_tokens=8, seed=0
        )[0]

    with torch.no_grad():
        torch.testing.assert_close(tokens(again), tokens(bundle))
