"""The model built from the released config has exactly the checkpoint's attribute paths and shapes."""

from __future__ import annotations

import torch
from transformers import CLIPVisionModel

from llava3d_ros.model.config import (
    clip_config,
    clip_l14_336_config,
    llava_config,
    released_7b_config,
)
from llava3d_ros.model.llava3d import Llava3DForCausalLM

POS = "model.video_tower.video_tower.positional_embedding.position_embedding_head"
CLICK = "model.video_tower.prompt_encoder.pos_emb3d.position_embedding_head"
# Transcribed from the reference (section 1), not derived from the code under test.
SPEC_EXTRA = {
    "model.mm_projector.0.weight": (4096, 1024),
    "model.mm_projector.0.bias": (4096,),
    "model.mm_projector.2.weight": (4096, 4096),
    "model.mm_projector.2.bias": (4096,),
    f"{POS}.0.weight": (1024, 3),
    f"{POS}.0.bias": (1024,),
    f"{POS}.1.weight": (1024,),
    f"{POS}.1.bias": (1024,),
    f"{POS}.3.weight": (1024, 1024),
    f"{POS}.3.bias": (1024,),
    f"{CLICK}.0.weight": (4096, 3),
    f"{CLICK}.0.bias": (4096,),
    f"{CLICK}.1.weight": (4096,),
    f"{CLICK}.1.bias": (4096,),
    f"{CLICK}.3.weight": (4096, 4096),
    f"{CLICK}.3.bias": (4096,),
}
LAYER = {
    "self_attn.q_proj.weight": (4096, 4096),
    "self_attn.k_proj.weight": (4096, 4096),
    "self_attn.v_proj.weight": (4096, 4096),
    "self_attn.o_proj.weight": (4096, 4096),
    "mlp.gate_proj.weight": (11008, 4096),
    "mlp.up_proj.weight": (11008, 4096),
    "mlp.down_proj.weight": (4096, 11008),
    "input_layernorm.weight": (4096,),
    "post_attention_layernorm.weight": (4096,),
}


def _meta_7b() -> Llava3DForCausalLM:
    with torch.device("meta"):
        return Llava3DForCausalLM(llava_config(released_7b_config()))


def test_7b_state_dict_is_exactly_the_spec() -> None:
    want = dict(SPEC_EXTRA)
    want["model.embed_tokens.weight"] = (32000, 4096)
    want["model.norm.weight"] = (4096,)
    want["lm_head.weight"] = (32000, 4096)
    for i in range(32):
        want.update({f"model.layers.{i}.{k}": v for k, v in LAYER.items()})
    got = {k: tuple(v.shape) for k, v in _meta_7b().state_dict().items()}
    assert got == want


def test_7b_module_types_at_spec_paths() -> None:
    m = _meta_7b()
    pos = m.get_submodule(POS)
    assert [type(x).__name__ for x in pos] == ["Linear", "LayerNorm", "ReLU", "Linear"]
    proj = m.get_submodule("model.mm_projector")
    assert [type(x).__name__ for x in proj] == ["Linear", "GELU", "Linear"]
    assert [type(x).__name__ for x in m.get_submodule(CLICK)] == [
        "Linear",
        "LayerNorm",
        "ReLU",
        "Linear",
    ]
    assert m.config.tokenizer_model_max_length == 4096 and m.config.mm_vision_select_layer == -2


def test_clip_l336_tower_shape_on_meta() -> None:
    with torch.device("meta"):
        v = CLIPVisionModel(clip_config(clip_l14_336_config()))
    sd = v.state_dict()
    assert tuple(sd["embeddings.position_embedding.weight"].shape) == (577, 1024)
    assert tuple(sd["embeddings.patch_embedding.weight"].shape) == (1024, 3, 14, 14)
    assert len(v.encoder.layers) == 24


def test_fourier_switch_only_widens_first_layers() -> None:
    cfg = released_7b_config() | {"position_encoding": "fourier_mlp", "position_fourier_freqs": 4}
    with torch.device("meta"):
        m = Llava3DForCausalLM(llava_config(cfg))
    assert tuple(m.get_submodule(POS)[0].weight.shape) == (1024, 3 + 6 * 4)
    assert tuple(m.get_submodule(CLICK)[0].weight.shape) == (4096, 3 + 6 * 4)
    assert tuple(m.get_submodule(POS)[3].weight.shape) == (1024, 1024)


def test_fourier_features_change_the_embedding() -> None:
    from llava3d_ros.model.llava3d import PositionMLP

    torch.manual_seed(0)
    plain, four = PositionMLP(8), PositionMLP(8, fourier_freqs=3)
    xyz = torch.randn(5, 3)
    assert plain(xyz).shape == four(xyz).shape == (5, 8)
    # a 1 cm shift moves the high-frequency features noticeably
    d = four.fourier_freqs
    assert d == 3 and not torch.allclose(four(xyz), four(xyz + 0.01), atol=1e-4)
