"""Engine: cached follow-ups equal full recomputation, features once per frame, cancel, seeds, errors."""

from __future__ import annotations

import dataclasses
import threading

import numpy as np
import pytest
import torch

from llava3d_ros.answer import ResultCode
from llava3d_ros.model.engine import Engine
from llava3d_ros.model.prompts import build_prompt, split_at_image, task_query, tokenize_prompt
from llava3d_ros.model.tiny import random_views

QUESTIONS = ["What is next to the sofa?", "How many chairs are in the room?", "Where is the lamp?"]


@pytest.fixture(scope="module")
def views():
    return random_views(6, seed=3)


def test_follow_ups_equal_full_recompute(bundle, views) -> None:
    cached = Engine(bundle, max_new_tokens=10)
    fresh = Engine(bundle, max_new_tokens=10, reuse_prefix=False)
    got, want = [], []
    for q in QUESTIONS:
        r = cached.answer(views, q)
        assert r.success, r.message
        got.append(cached.last_tokens)
        assert fresh.answer(views, q).success
        want.append(fresh.last_tokens)
    assert cached.prefix_hits == len(QUESTIONS) - 1 and fresh.prefix_hits == 0
    assert got == want
    # the model is input-sensitive, so equality above is not vacuous
    assert len({tuple(t) for t in want}) > 1


def test_clicks_follow_up_equals_recompute(bundle, views) -> None:
    views = views[:1]  # few scene tokens, so two click tokens visibly steer a random model
    cached = Engine(bundle, max_new_tokens=8)
    fresh = Engine(bundle, max_new_tokens=8, reuse_prefix=False)
    clicks = [np.array([0.5, 0.2, 1.0]), np.array([-1.0, 2.0, 0.3])]
    cached.answer(views, "Where is the lamp?")
    r = cached.answer(views, "Are these two objects similar in size?", click_points=clicks)
    assert r.success and cached.prefix_hits == 1
    fresh.answer(views, "Are these two objects similar in size?", click_points=clicks)
    assert cached.last_tokens == fresh.last_tokens
    fresh.answer(views, "Are these two objects similar in size?", click_points=clicks[::-1])
    assert cached.last_tokens != fresh.last_tokens, "click order must matter"


def test_scene_change_invalidates_prefix(bundle, views) -> None:
    eng = Engine(bundle, max_new_tokens=6)
    eng.answer(views, QUESTIONS[0])
    moved = [dataclasses.replace(v, patch_xyz=v.patch_xyz + np.float32(0.5)) for v in views]
    r = eng.answer(moved, QUESTIONS[0])
    assert r.success and eng.prefix_hits == 0
    ref = Engine(bundle, max_new_tokens=6, reuse_prefix=False)
    ref.answer(moved, QUESTIONS[0])
    assert eng.last_tokens == ref.last_tokens
    eng.answer(moved[:-1], QUESTIONS[0])  # a view dropped: new scene, no reuse
    assert eng.prefix_hits == 0
    eng.answer(moved[:-1], QUESTIONS[1])
    assert eng.prefix_hits == 1


def test_vision_runs_once_per_keyframe(bundle, views) -> None:
    eng = Engine(bundle, max_new_tokens=2)
    eng.answer(views, QUESTIONS[0])
    assert eng.features.computed == len(views)
    moved = [dataclasses.replace(v, patch_xyz=v.patch_xyz * np.float32(1.1)) for v in views]
    eng.answer(moved, QUESTIONS[1])  # new poses, same frames: no new CLIP work
    assert eng.features.computed == len(views)
    extra = random_views(2, seed=9, first_id=100)
    eng.answer(moved + extra, QUESTIONS[2])
    assert eng.features.computed == len(views) + 2
    eng.features.drop([100])
    eng.answer(moved + extra, QUESTIONS[0])  # unchanged scene: the KV prefix needs no features
    assert eng.features.computed == len(views) + 2
    eng.answer(extra + moved, QUESTIONS[0])  # new view order = new scene: only frame 100 re-runs
    assert eng.features.computed == len(views) + 3


def test_feature_cache_is_bounded(bundle, views) -> None:
    eng = Engine(bundle, max_new_tokens=1, feature_cache_size=4)
    assert eng.answer(views, QUESTIONS[0]).success  # more views than capacity still work
    assert len(eng.features) == 4 and eng.features.computed == 6
    assert eng.answer(views[:4], QUESTIONS[0]).success
    assert len(eng.features) == 4 and eng.features.computed == 8  # frames 0, 1 had been evicted
    eng.features.retain([views[0].frame_id])
    assert len(eng.features) == 1


def test_result_fields_and_callbacks(bundle, views) -> None:
    eng = Engine(bundle, max_new_tokens=5)
    stages, partial = [], []
    r = eng.answer(
        views, QUESTIONS[0], on_stage=stages.append, on_token=lambda t, n: partial.append((t, n))
    )
    assert r.success and stages == ["encoding", "prefill", "decoding"]
    assert [n for _, n in partial] == list(range(1, len(eng.last_tokens) + 1))
    assert partial[-1][0].strip() == r.text
    assert r.view_stamps_ns == [v.stamp_ns for v in views]
    assert 0 < r.scene_tokens <= 2560
    assert "random-weights" in r.model and r.model == eng.model_id
    t = r.timings
    assert t.total_s >= t.encode_s + t.prefill_s + t.decode_s > 0


def test_cancel_mid_decode_then_reuse(bundle, views) -> None:
    eng = Engine(bundle, max_new_tokens=50, temperature=0.0)
    ev = threading.Event()

    def on_token(text: str, n: int) -> None:
        if n == 3:
            ev.set()

    r = eng.answer(views, QUESTIONS[0], on_token=on_token, cancel=ev)
    assert r.code == ResultCode.CANCELED and "after 3 tokens" in r.message
    ok = eng.answer(views, QUESTIONS[1], max_new_tokens=6)  # prefix survived the cancel intact
    ref = Engine(bundle, reuse_prefix=False)
    ref.answer(views, QUESTIONS[1], max_new_tokens=6)
    assert ok.success and eng.prefix_hits == 1 and eng.last_tokens == ref.last_tokens


def test_sampling_is_seeded(bundle, views) -> None:
    def run(seed: int) -> list[int]:
        eng = Engine(bundle, max_new_tokens=12, temperature=1.5, seed=seed)
        assert eng.answer(views, QUESTIONS[0]).success
        return eng.last_tokens

    assert run(7) == run(7)
    assert run(7) != run(8)


@pytest.mark.parametrize(
    ("kwargs", "code"),
    [
        ({"question": "x", "task": "poem"}, ResultCode.BAD_REQUEST),
        ({"question": "x", "click_points": [np.array([np.nan, 0, 0])]}, ResultCode.BAD_REQUEST),
        ({"question": "x", "click_points": [np.zeros(2)]}, ResultCode.BAD_REQUEST),
        ({"question": "x", "max_new_tokens": 5000}, ResultCode.BAD_REQUEST),
    ],
)
def test_bad_input_is_a_result_not_an_exception(bundle, views, kwargs, code) -> None:
    assert Engine(bundle).answer(views, **kwargs).code == code


def test_bad_views(bundle, views) -> None:
    eng = Engine(bundle, max_new_tokens=2)
    assert eng.answer([], "x").code == ResultCode.NO_SCENE
    small = dataclasses.replace(views[0], image=np.zeros((10, 10, 3), np.uint8))
    assert eng.answer([small], "x").code == ResultCode.BAD_REQUEST
    dark = [dataclasses.replace(v, patch_valid=np.zeros_like(v.patch_valid)) for v in views]
    r = eng.answer(dark, "x")
    assert r.code == ResultCode.BAD_REQUEST and "depth" in r.message


def test_release(bundle, views) -> None:
    eng = Engine(bundle, max_new_tokens=2)
    eng.release()
    assert eng.answer(views, "x").code == ResultCode.NOT_READY


@pytest.mark.parametrize("stage", ["encoding", "prefill", "decoding"])
def test_out_of_memory_is_model_error_then_recovers(bundle, views, stage) -> None:
    """OOM (injected: CPU memory cannot run out here) → coded result, caches dropped, next OK."""
    eng = Engine(bundle, max_new_tokens=5)
    ref = eng.answer(views, QUESTIONS[0])
    fired = []

    def hook(name: str, n_views: int) -> None:
        if name == stage and not fired:
            fired.append(n_views)
            raise torch.OutOfMemoryError("CUDA out of memory (injected)")

    eng.fault_hook = hook
    r = eng.answer(views, QUESTIONS[0])
    assert r.code == ResultCode.MODEL_ERROR and r.out_of_memory, r.message
    assert f"out of memory with {len(views)} views" in r.message and fired == [len(views)]
    assert len(eng.features) == 0 and eng._prefix is None  # recomputable state dropped
    again = eng.answer(views, QUESTIONS[0])
    assert again.success and not again.out_of_memory and again.text == ref.text


def _capped(result) -> list[str]:
    return [w for w in result.parse_warnings if "capped" in w]


def test_cap_warning_only_when_voxels_are_left_out(bundle, views) -> None:
    eng = Engine(bundle, max_new_tokens=4)
    full = eng.answer(views, QUESTIONS[0])
    occupied = full.scene_tokens
    assert full.success and not _capped(full) and occupied < eng.max_scene_tokens
    # A context that leaves the scene exactly the occupied voxels' room: a cap lower than
    # max_scene_tokens, nothing lost, no warning; one token less and one voxel is left out.
    # (A shorter context instead of a long answer: decoding ~2,000 tokens took 40 s.)
    pre, post = split_at_image(
        tokenize_prompt(build_prompt(task_query("", QUESTIONS[0], 0)), bundle.tokenizer)
    )
    fits = len(pre) + len(post) + occupied + 4  # text + scene + answer
    for context, lost in ((fits, 0), (fits - 1, 1)):
        eng.context = context  # the CLIP features stay cached; the scene prefix is recomputed
        r = eng.answer(views, QUESTIONS[0])
        assert r.success and r.scene_tokens == occupied - lost, r.message
        assert _capped(r) == (
            [
                f"scene tokens capped at {occupied - 1} to fit the {context}-token context: "
                f"1 of {occupied} occupied voxels left out"
            ]
            if lost
            else []
        )
    assert eng.features.computed == len(views) and eng.prefix_hits == 0
    tight = Engine(bundle, max_new_tokens=4, max_scene_tokens=occupied - 7)
    for _ in range(2):  # computed, then from the cached prefix: the same warning
        r = tight.answer(views, QUESTIONS[1])
        assert r.success and r.scene_tokens == occupied - 7
        assert _capped(r) == [
            f"scene tokens capped at {occupied - 7} (max_scene_tokens): 7 of {occupied} "
            "occupied voxels left out"
        ]
    assert tight.prefix_hits == 1
