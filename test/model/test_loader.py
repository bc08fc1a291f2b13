"""Loading the released on-disk format: exact key match, clear failures, no pickles, no hub."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from llava3d_ros.model.config import ConfigError
from llava3d_ros.model.loader import CheckpointError, load_bundle, read_shapes, weight_files


def _copy(checkpoint, tmp_path: Path) -> tuple[Path, Path]:
    md, vd = checkpoint
    dst = tmp_path / "ckpt"
    shutil.copytree(md, dst)
    return dst, dst / vd.relative_to(md)


def test_released_format_files(checkpoint) -> None:
    md, vd = checkpoint
    cfg = json.loads((md / "config.json").read_text())
    assert cfg["architectures"] == ["LlavaLlamaForCausalLM"] and cfg["model_type"] == "llava_llama"
    for key in (
        "mm_vision_tower",
        "mm_projector_type",
        "mm_hidden_size",
        "mm_vision_select_layer",
        "num_frames",
        "tokenizer_model_max_length",
        "mm_video_tower",
    ):
        assert key in cfg
    index = json.loads((md / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) == 3
    assert (md / "tokenizer.model").is_file() and (vd / "model.safetensors").is_file()
    # CLIP files keep the ``vision_model.`` prefix the released tower uses
    assert all(k.startswith("vision_model.") for k in read_shapes([vd / "model.safetensors"]))


def test_roundtrip_loads_every_tensor(bundle, checkpoint) -> None:
    loaded = load_bundle(*checkpoint, dtype="fp32", device="cpu")
    assert not loaded.partial
    ref, got = bundle.lm.state_dict(), loaded.lm.state_dict()
    assert ref.keys() == got.keys()
    assert all(torch.equal(ref[k], got[k]) for k in ref)
    vref, vgot = bundle.vision.state_dict(), loaded.vision.state_dict()
    assert vref.keys() == vgot.keys() and all(torch.equal(vref[k], vgot[k]) for k in vref)
    assert "random-weights" in loaded.model_id
    assert loaded.tokenizer.encode("a chair") == bundle.tokenizer.encode("a chair")


def test_dtype_and_rotary_stay_float32(checkpoint) -> None:
    loaded = load_bundle(*checkpoint, dtype="bf16", device="cpu")
    assert loaded.dtype == torch.bfloat16 and loaded.vision.dtype == torch.bfloat16
    assert loaded.lm.model.rotary_emb.inv_freq.dtype == torch.float32
    assert "bf16" in loaded.model_id


def test_truncated_shard_fails_clearly(checkpoint, tmp_path) -> None:
    md, vd = _copy(checkpoint, tmp_path)
    shard = md / "model-00002-of-00003.safetensors"
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="model-00002-of-00003.safetensors"):
        load_bundle(md, vd, dtype="fp32", device="cpu")


def test_corrupt_header_fails_clearly(checkpoint, tmp_path) -> None:
    md, vd = _copy(checkpoint, tmp_path)
    shard = md / "model-00001-of-00003.safetensors"
    data = bytearray(shard.read_bytes())
    data[8:40] = b"#" * 32
    shard.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="corrupt or truncated.*00001"):
        load_bundle(md, vd, dtype="fp32", device="cpu")


def test_missing_and_unexpected_keys_are_listed(checkpoint, tmp_path) -> None:
    md, vd = _copy(checkpoint, tmp_path)
    shard = md / "model-00003-of-00003.safetensors"
    state = load_file(str(shard))
    gone = sorted(state)[0]
    del state[gone]
    state["model.extra_head.weight"] = torch.zeros(2, 2)
    save_file(state, str(shard))
    with pytest.raises(CheckpointError) as err:
        load_bundle(md, vd, dtype="fp32", device="cpu")
    msg = str(err.value)
    assert f"missing (1): {gone}" in msg and "unexpected (1): model.extra_head.weight" in msg
    partial = load_bundle(md, vd, dtype="fp32", device="cpu", allow_partial=True)
    assert partial.partial and "partial-load" in partial.model_id
    assert not any(p.is_meta for p in partial.lm.parameters())


def test_misshaped_key_is_reported(checkpoint, tmp_path) -> None:
    md, vd = _copy(checkpoint, tmp_path)
    shard = vd / "model.safetensors"
    state = load_file(str(shard))
    key = "vision_model.post_layernorm.weight"
    state[key] = torch.ones(7)
    save_file(state, str(shard))
    with pytest.raises(CheckpointError, match=r"mis-shaped \(1\): post_layernorm.weight \(7,\)"):
        load_bundle(md, vd, dtype="fp32", device="cpu")


def test_pickled_weights_are_refused(tmp_path) -> None:
    (tmp_path / "pytorch_model.bin").write_bytes(b"not even read")
    with pytest.raises(CheckpointError, match=r"pickled.*safetensors.*save_file"):
        weight_files(tmp_path)


def test_index_naming_absent_shard(checkpoint, tmp_path) -> None:
    md, vd = _copy(checkpoint, tmp_path)
    (md / "model-00003-of-00003.safetensors").unlink()
    with pytest.raises(CheckpointError, match="do not exist.*00003"):
        load_bundle(md, vd, dtype="fp32", device="cpu")


def test_vision_dir_required_and_checked(checkpoint, tmp_path) -> None:
    md, _ = checkpoint
    with pytest.raises(ConfigError, match="local/tiny-clip-random.*vision_tower_dir"):
        load_bundle(md, None, device="cpu")
    with pytest.raises(ConfigError, match="not found"):
        load_bundle(md, tmp_path / "nope", device="cpu")


def test_bad_options_and_files(checkpoint, tmp_path) -> None:
    md, vd = checkpoint
    with pytest.raises(ConfigError, match="dtype"):
        load_bundle(md, vd, dtype="int8", device="cpu")
    with pytest.raises(ConfigError, match="device"):
        load_bundle(md, vd, device="tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA is not available"):
            load_bundle(md, vd, device="cuda")
    bad, bvd = _copy(checkpoint, tmp_path)
    (bad / "config.json").write_text("{not json")
    with pytest.raises(ConfigError, match="cannot parse"):
        load_bundle(bad, bvd, device="cpu")
    (bad / "config.json").write_text(json.dumps({"hidden_size": 8}))
    with pytest.raises(ConfigError, match="lacks required keys"):
        load_bundle(bad, bvd, device="cpu")
    with pytest.raises(CheckpointError, match="not found"):
        load_bundle(tmp_path / "absent", bvd, device="cpu")
