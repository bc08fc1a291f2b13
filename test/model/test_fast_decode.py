"""The static decode path (``decode_path=static``, model/fast_decode.py) answers exactly as the
eager one: same greedy tokens, text, box scores, prefix reuse, cancel and streaming, on the
random tiny model and on the embedded trained one. It runs on the CPU without compilation
(on CUDA the step is compiled); the equality checks are shown to catch an off-by-one."""

from __future__ import annotations

import dataclasses
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

import llava3d_ros.model.fast_decode as fast_decode
from llava3d_ros.answer import ResultCode
from llava3d_ros.model.engine import Engine
from llava3d_ros.model.fast_decode import (
    StaticDecoder,
    bucket_length,
    pick_on_device,
    resolve_decode_path,
)
from llava3d_ros.model.generate import SamplingConfig, pick_token
from llava3d_ros.model.loader import load_bundle
from llava3d_ros.model.tiny import random_views

EMBEDDED = Path(__file__).resolve().parents[2] / "llava3d_ros" / "assets" / "tiny_model"
CLICK = np.array([0.5, 0.2, 1.0])
# (question, task, clicks): qa, click caption, grounding
QUERIES = [
    ("Where is the lamp?", "", []),
    ("What is it?", "caption", [CLICK]),
    ("the red chair", "ground", []),
    ("How many chairs are in the room?", "", []),
]


@pytest.fixture(scope="module")
def views():
    return random_views(3, seed=5)


@pytest.fixture
def box_bias(bundle):
    """Bias the random model's logits towards brackets, commas and digits (a hook on lm_head,
    so eager and static see the same model): it opens boxes and the grammar has to repair
    them, which exercises the grammar's re-pick inside the static loop."""
    texts = bundle.tokenizer.token_texts()
    bias = torch.zeros(bundle.lm.config.vocab_size)
    for i, t in enumerate(texts):
        if t and t.strip() in ("[", "]", ","):
            bias[i] += 4.0
        elif t and t.strip().replace(".", "").isdigit():
            bias[i] += 3.0
    handle = bundle.lm.lm_head.register_forward_hook(lambda m, i, o: o + bias)
    yield
    handle.remove()


def _collect(pieces: list[tuple[str, int]]):
    return lambda text, n: pieces.append((text, n))


def _run(engine: Engine, views, queries, **kwargs):
    """Per query: (tokens, text, box scores, token probs, streamed pieces, overruled)."""
    out = []
    for q, task, clicks in queries:
        pieces: list[tuple[str, int]] = []
        r = engine.answer(views, q, task, clicks, on_token=_collect(pieces), **kwargs)
        assert r.success, r.message
        out.append(
            (
                list(engine.last_tokens),
                r.text,
                [b.score for b in r.boxes],
                list(engine.last_token_probs),
                pieces,
                r.box_tokens_overruled,
            )
        )
    return out


def _assert_same(got, want) -> None:
    assert len(got) == len(want)
    for (gt, gx, gs, gp, gpieces, go), (wt, wx, ws, wp, wpieces, wo) in zip(got, want, strict=True):
        assert gt == wt  # greedy tokens identical
        assert gx == wx
        assert gpieces == wpieces  # streaming saw the same pieces in the same order
        assert go == wo
        np.testing.assert_allclose(gs, ws, rtol=0, atol=1e-5)
        np.testing.assert_allclose(gp, wp, rtol=0, atol=1e-5)


def _pair(bundle, **kwargs) -> tuple[Engine, Engine]:
    return (
        Engine(bundle, decode_path="eager", **kwargs),
        Engine(bundle, decode_path="static", **kwargs),
    )


def test_decode_path_choice() -> None:
    assert resolve_decode_path("auto", "cpu") == "eager"
    assert resolve_decode_path("auto", torch.device("cuda", 0)) == "static"
    assert resolve_decode_path("static", "cpu") == "static"
    assert resolve_decode_path("eager", "cuda") == "eager"
    with pytest.raises(ValueError, match="decode_path"):
        resolve_decode_path("fast", "cpu")
    assert bucket_length(1) == 256 and bucket_length(256) == 256 and bucket_length(257) == 512


def test_auto_is_eager_on_cpu_and_both_towers_use_sdpa(bundle) -> None:
    eng = Engine(bundle)
    assert eng.decode_path == "eager" and eng.decode_path_note.startswith("eager")
    with pytest.raises(ValueError, match="decode_path"):
        Engine(bundle, decode_path="fast")
    # prefill runs through torch's scaled_dot_product_attention (flash/efficient kernels on GPU)
    assert bundle.lm.config._attn_implementation == "sdpa"
    assert bundle.vision.config._attn_implementation == "sdpa"


@pytest.mark.parametrize("constrain", [True, False], ids=["grammar", "free"])
def test_static_equals_eager_random_model(bundle, views, box_bias, constrain) -> None:
    eager, static = _pair(bundle, max_new_tokens=40, constrain_boxes=constrain)
    want = _run(eager, views, QUERIES)
    got = _run(static, views, QUERIES)
    _assert_same(got, want)
    assert static.prefix_hits == eager.prefix_hits == len(QUERIES) - 1
    assert static._static is not None and "plain" in static.decode_path_note
    # not vacuous: the answers differ between questions, and (grammar on) boxes were repaired
    assert len({tuple(w[0]) for w in want}) == len(QUERIES)
    if constrain:
        assert any(w[5] > 0 for w in want) and any(w[2] for w in want)


def test_static_equals_eager_without_prefix_reuse(bundle, views) -> None:
    eager, static = _pair(bundle, max_new_tokens=20, reuse_prefix=False)
    _assert_same(_run(static, views, QUERIES[:2]), _run(eager, views, QUERIES[:2]))
    assert static.prefix_hits == 0


@pytest.mark.parametrize(
    "cfg",
    [SamplingConfig(temperature=0.8, top_p=0.9, seed=3), SamplingConfig(temperature=1.5, seed=4)],
    ids=["nucleus", "hot"],
)
def test_device_pick_is_pick_token_on_cpu(cfg) -> None:
    torch.manual_seed(0)
    for _ in range(20):
        logits = torch.randn(97) * 3
        g1 = torch.Generator().manual_seed(cfg.seed)
        g2 = torch.Generator().manual_seed(cfg.seed)
        assert [pick_token(logits, cfg, g1) for _ in range(5)] == [
            int(pick_on_device(logits, cfg, g2)) for _ in range(5)
        ]
    assert int(pick_on_device(torch.tensor([0.0, 3.0, 1.0]), SamplingConfig(), None)) == 1


def test_sampled_answers_identical_on_cpu(bundle, views, box_bias) -> None:
    eager, static = _pair(bundle, max_new_tokens=30, temperature=0.8, top_p=0.9, seed=11)
    _assert_same(_run(static, views, QUERIES[2:3]), _run(eager, views, QUERIES[2:3]))


def test_follow_up_copies_only_the_question(bundle, views) -> None:
    """The static cache keeps the scene prefix across questions: a warm follow-up is still a
    prefix reuse and copies only the question's positions into the static cache."""
    eager, static = _pair(bundle, max_new_tokens=12)
    _run(static, views, QUERIES[:1])
    dec = static._static
    first = dec.copied_positions
    assert first > static._prefix.length  # the scene prefix and the first question
    _run(static, views, QUERIES[3:4])
    assert static.prefix_hits == 1
    assert 0 < dec.copied_positions - first < 40  # the question only, not ~500 scene tokens
    assert dec.reallocations == 1
    _assert_same(
        _run(Engine(bundle, decode_path="static", max_new_tokens=12), views, QUERIES[3:4]),
        _run(eager, views, QUERIES[3:4]),
    )


def test_forgotten_scene_is_copied_again(bundle, views) -> None:
    """Same frame ids and positions, new images: after forget_scenes the static cache must
    not answer from the previous room's KV (it is keyed to the prefix object, not its key)."""
    eager, static = _pair(bundle, max_new_tokens=12)
    recoloured = [dataclasses.replace(v, image=255 - v.image) for v in views]
    _run(static, views, QUERIES[:1])
    static.forget_scenes()
    got = _run(static, recoloured, QUERIES[3:4])
    want = _run(eager, recoloured, QUERIES[3:4])
    _assert_same(got, want)
    before = _run(Engine(bundle, decode_path="eager", max_new_tokens=12), views, QUERIES[3:4])
    assert before[0][0] != want[0][0]  # the images matter, so the check above is not vacuous


def test_cache_grows_and_stays_correct(bundle, views) -> None:
    eager, static = _pair(bundle, max_new_tokens=4)
    static._static = StaticDecoder(bundle.lm, bucket=16)
    _run(static, views, QUERIES[:1])
    cap = static._static.capacity
    got = _run(static, views, QUERIES[3:4], max_new_tokens=40)  # needs more room: reallocated
    assert static._static.capacity > cap and static._static.reallocations == 2
    _assert_same(got, _run(eager, views, QUERIES[3:4], max_new_tokens=40))


def test_cancel_then_reuse(bundle, views) -> None:
    eng = Engine(bundle, max_new_tokens=50, decode_path="static")
    ev = threading.Event()

    def on_token(text: str, n: int) -> None:
        if n == 3:
            ev.set()

    r = eng.answer(views, QUERIES[0][0], on_token=on_token, cancel=ev)
    assert r.code == ResultCode.CANCELED and "after 3 tokens" in r.message
    pre = threading.Event()
    pre.set()
    r = eng.answer(views, QUERIES[0][0], cancel=pre)
    assert r.code == ResultCode.CANCELED and "before the first token" in r.message
    ok = eng.answer(views, QUERIES[3][0], max_new_tokens=8)  # prefix survived the cancels
    ref = Engine(bundle, decode_path="eager", reuse_prefix=False)
    ref.answer(views, QUERIES[3][0], max_new_tokens=8)
    assert ok.success and eng.prefix_hits == 2 and eng.last_tokens == ref.last_tokens


@pytest.mark.parametrize("shift", [1, -1])
def test_an_off_by_one_cache_position_is_caught(bundle, views, monkeypatch, shift) -> None:
    """The equality checks above fail if the static path puts the answer one slot off."""
    eager, static = _pair(bundle, max_new_tokens=20)
    want = _run(eager, views, QUERIES[:1])
    real = StaticDecoder._set_length

    def shifted(self, n: int) -> None:
        real(self, n + shift)
        self.length = n

    monkeypatch.setattr(StaticDecoder, "_set_length", shifted)
    got = _run(static, views, QUERIES[:1])
    assert got[0][0] != want[0][0]


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch.jit, inside dynamo
def test_the_step_traces_as_one_graph(bundle, views) -> None:
    """What CUDA-graph capture needs: the per-token step compiles with fullgraph=True (no graph
    break; dynamo's eager backend here, so no C++ compiler is needed) and answers the same."""
    eager, static = _pair(bundle, max_new_tokens=10)
    static._static = StaticDecoder(
        bundle.lm, compile=True, compile_options={"backend": "eager", "fullgraph": True}
    )
    _assert_same(_run(static, views, QUERIES[:2]), _run(eager, views, QUERIES[:2]))
    assert "compiled" in static.decode_path_note and "failed" not in static.decode_path_note


def test_compile_failure_falls_back_to_the_plain_step(bundle, views, monkeypatch) -> None:
    def broken_compile(fn, **kwargs):
        def run(*a, **k):
            fn(*a, **k)  # a partial update of the cache before failing must not matter
            raise RuntimeError("no capture here")

        return run

    monkeypatch.setattr(fast_decode.torch, "compile", broken_compile)
    eager, static = _pair(bundle, max_new_tokens=12)
    static._static = StaticDecoder(bundle.lm, compile=True)
    _assert_same(_run(static, views, QUERIES[:2]), _run(eager, views, QUERIES[:2]))
    assert "compile failed (RuntimeError: no capture here)" in static.decode_path_note

    def refuses(fn, **kwargs):
        raise RuntimeError("no dynamo")

    monkeypatch.setattr(fast_decode.torch, "compile", refuses)
    eng = Engine(bundle, max_new_tokens=12, decode_path="static")
    eng._static = StaticDecoder(bundle.lm, compile=True)
    _assert_same(_run(eng, views, QUERIES[:1]), _run(eager, views, QUERIES[:1]))
    assert "no dynamo" in eng.decode_path_note


def test_release_and_errors_drop_the_static_cache(bundle, views) -> None:
    eng = Engine(bundle, max_new_tokens=4, decode_path="static")
    assert eng.answer(views, QUERIES[0][0]).success and eng._static is not None
    eng.release()
    assert eng._static is None and eng.answer(views, "?").code == ResultCode.NOT_READY


# ----- the embedded trained tiny model ----------------------------------------------------------


@pytest.fixture(scope="module")
def trained():
    if not (EMBEDDED / "config.json").is_file():
        pytest.skip("no embedded model in this build")
    return load_bundle(EMBEDDED, EMBEDDED / "vision_tower", dtype="fp32", device="cpu")


@pytest.fixture(scope="module")
def synthetic_scene(trained):
    from llava3d_ros.synthetic.dataset import make_sample
    from llava3d_ros.synthetic.evaluate import data_config_for

    sample = make_sample(5, data_config_for(trained))
    picked, kinds = [], set()
    for t in sample.tasks:  # one task of each kind: caption (click), color, category, ground, count
        if t.kind not in kinds:
            kinds.add(t.kind)
            picked.append((t.question, "", list(t.clicks)))
    # and a follow-up that reuses the scene prefix (same question length class as a count)
    counts = [t for t in sample.tasks if t.kind == "count"]
    picked.extend((t.question, "", []) for t in counts[1:3])
    picked.append(("the yellow table", "ground", []))
    return sample.model_views(), picked


@pytest.mark.parametrize("constrain", [True, False], ids=["grammar", "free"])
def test_static_equals_eager_trained_model(trained, synthetic_scene, constrain) -> None:
    views, queries = synthetic_scene
    eager, static = _pair(trained, max_new_tokens=40, constrain_boxes=constrain)
    want = _run(eager, views, queries)
    got = _run(static, views, queries)
    _assert_same(got, want)
    assert static.prefix_hits == eager.prefix_hits >= 2  # the count follow-ups hit
    assert sum(len(w[2]) for w in want) >= 2  # the caption and grounding answers hold boxes
    assert all(0.0 < s <= 1.0 for w in want for s in w[2])


@pytest.mark.parametrize("path", ["auto", "eager", "static"])
def test_decode_path_parameter_reaches_the_engine(path: str) -> None:
    import yaml

    from llava3d_ros.ros.model_loading import load_engine
    from llava3d_ros.ros.params import PARAMS, Settings

    repo = Path(__file__).resolve().parents[2]
    presets = {
        name: yaml.safe_load((repo / "config" / f"{name}.yaml").read_text())["/**"][
            "ros__parameters"
        ]
        for name in ("default", "cpu_tiny", "jetson_orin")
    }
    assert all(values["decode_path"] == "auto" for values in presets.values())
    p = next(p for p in PARAMS if p.name == "decode_path")
    assert p.default == "auto" and p.choices == ("auto", "eager", "static")
    settings = dataclasses.replace(
        Settings.from_values(presets["cpu_tiny"]), decode_path=path, device="cpu"
    )
    engine = load_engine(settings)
    assert engine.decode_path == ("eager" if path == "auto" else path)  # auto: eager on CPU
