"""A checkpoint directory that is missing, truncated or holds wrong shapes: NOT_READY, saying why."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from llava3d_ros.msg import Answer
from llava3d_ros.ros.client import Llava3dClient, make_prompt

pytestmark = [pytest.mark.ros, pytest.mark.slow]

CASES = ("intact", "missing", "truncated", "wrong_shapes")


def _corrupt(good: Path, case: str, root: Path) -> Path:
    """A copy of ``good`` with the fault ``case`` applied (``missing``: a path that is not there)."""
    out = root / case
    if case == "missing":
        return out
    shutil.copytree(good, out)
    index = json.loads((out / "model.safetensors.index.json").read_text())
    shard = out / sorted(set(index["weight_map"].values()))[0]
    if case == "truncated":  # a copy that stopped half way
        data = shard.read_bytes()
        shard.write_bytes(data[: len(data) // 2])
    elif case == "wrong_shapes":  # every tensor of one shard one row too large
        import torch
        from safetensors.torch import load_file, save_file

        state = load_file(str(shard))
        grown = {
            k: torch.cat([v, v[:1]]) if v.ndim >= 1 and v.shape[0] > 0 else v
            for k, v in state.items()
        }
        save_file(grown, str(shard), metadata={"format": "pt"})
    return out


@pytest.fixture(scope="module")
def nodes(node_factory, tmp_path_factory):  # noqa: ANN001
    """One node per case, started together (each needs seconds to come up), named after it."""
    from llava3d_ros.model.tiny import random_bundle, write_checkpoint

    root = tmp_path_factory.mktemp("checkpoints")
    good, _ = write_checkpoint(random_bundle(), root / "good")
    handles = {}
    for case in CASES:
        path = _corrupt(good, case, root)
        run = ("-m", "llava3d_ros.cli", "run", "--autostart", "--ros-args", "-r", f"__node:={case}")
        handles[case] = node_factory(f"model_path:={path}", name=case, args=run)
    return handles


@pytest.fixture(scope="module")
def answers(nodes, ros_context) -> dict[str, Answer]:  # noqa: ANN001
    out = {}
    for case, handle in nodes.items():
        client = Llava3dClient(f"/{case}", ros_context)
        try:
            try:
                client.wait_for_node(60.0)
            except Exception:
                pytest.fail(f"node {case} did not come up:\n{handle.output()[-4000:]}")
            out[case] = client.query(make_prompt("what is here?"), timeout=30)
            print(f"checkpoint {case}: code {out[case].code} {out[case].message!r}")  # for -s
        finally:
            client.close()
    return out


def test_checkpoint_intact_loads(answers):
    # the control: the same checkpoint uncorrupted loads, so the refusals below are the faults'
    assert answers["intact"].code == Answer.NO_SCENE, answers["intact"].message


def test_checkpoint_missing(answers):
    a = answers["missing"]
    assert a.code == Answer.NOT_READY and "failed to load" in a.message, a.message
    assert "not found" in a.message and "missing" in a.message  # names the path


def test_checkpoint_truncated(answers):
    a = answers["truncated"]
    assert a.code == Answer.NOT_READY and "failed to load" in a.message, a.message
    assert "truncated" in a.message and "model-00001" in a.message, a.message


def test_checkpoint_wrong_shapes(answers):
    a = answers["wrong_shapes"]
    assert a.code == Answer.NOT_READY and "failed to load" in a.message, a.message
    assert "mis-shaped" in a.message and "embed_tokens" in a.message, a.message
