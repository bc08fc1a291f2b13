"""Question/answer generation: prompt styles, clicks inside objects, unique descriptions."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llava3d_ros.synthetic.render import render_scene
from llava3d_ros.synthetic.scenes import CATEGORIES, Box, make_scene
from llava3d_ros.synthetic.tasks import (
    CLICK,
    TASK_KINDS,
    format_box,
    format_number,
    make_tasks,
    surface_click,
    visible_pixels,
)


def test_number_and_box_format():
    assert format_number(-0.04) == "0.0"
    assert format_number(1.25) in ("1.2", "1.3")
    assert format_number(-2.36) == "-2.4"
    assert format_box(np.array([0.0, -1.04, 0.5, 1.0, 0.55, 2.0])) == (
        "[0.0, -1.0, 0.5, 1.0, 0.6, 2.0]"
    )
    with pytest.raises(ValueError):
        format_box(np.zeros(5))
    with pytest.raises(ValueError):
        format_box(np.array([0, 0, 0, 1, 1, np.nan]))


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 10**6))
def test_tasks_are_well_formed(seed):
    scene = make_scene(seed)
    tasks = make_tasks(scene, np.random.default_rng(seed))
    kinds = {t.kind for t in tasks}
    assert {"caption", "color", "category", "count"} <= kinds
    for t in tasks:
        assert t.question.count(CLICK) == len(t.clicks)
        assert t.clicks.dtype == np.float32
        if t.kind in ("caption", "color", "category"):
            obj = scene.objects[t.target]
            lo, hi = obj.box[:3] - obj.box[3:] / 2, obj.box[:3] + obj.box[3:] / 2
            assert np.all(t.clicks[0] >= lo - 1e-5) and np.all(t.clicks[0] <= hi + 1e-5)
        if t.kind == "caption":
            assert (
                t.question
                == f"The related object is located at {CLICK}. Describe the object in detail."
            )
            obj = scene.objects[t.target]
            assert (
                t.answer
                == f"A {obj.color} {obj.category}. It is localized at {format_box(obj.box)}."
            )
        if t.kind == "color":
            assert t.answer == scene.objects[t.target].color
        if t.kind == "category":
            assert t.answer == scene.objects[t.target].category
        if t.kind == "ground":
            assert t.question.endswith(
                "Which object best matches the given description? Please provide its coordinates."
            )
            phrase = t.question.split('"')[1].removeprefix("the ").split()
            matches = [
                o
                for o in scene.objects
                if phrase[-1] == o.category
                and (len(phrase) < 2 or phrase[-2] == o.color)
                and (len(phrase) < 3 or phrase[-3] == o.size)
            ]
            assert matches == [scene.objects[t.target]]
            assert t.answer == format_box(t.box)
    counts = {t.question.split()[2]: int(t.answer) for t in tasks if t.kind == "count"}
    assert counts == {c + "s": sum(o.category == c for o in scene.objects) for c in CATEGORIES}


def test_tasks_deterministic_and_filtered_by_visibility():
    scene = make_scene(4)
    a = make_tasks(scene, np.random.default_rng(1))
    b = make_tasks(scene, np.random.default_rng(1))
    assert [(t.question, t.answer) for t in a] == [(t.question, t.answer) for t in b]
    assert all(np.array_equal(x.clicks, y.clicks) for x, y in zip(a, b, strict=True))
    seen = visible_pixels(render_scene(scene, 8, 48), len(scene.objects))
    hidden = np.zeros_like(seen)
    only = make_tasks(scene, np.random.default_rng(1), ("color",), visible=hidden)
    assert only == []
    some = make_tasks(scene, np.random.default_rng(1), ("color",), visible=seen, min_pixels=1)
    assert {t.target for t in some} == set(np.flatnonzero(seen))


def test_unknown_kind_raises():
    with pytest.raises(ValueError, match="unknown task kinds"):
        make_tasks(make_scene(0), np.random.default_rng(0), ("colour",))
    assert "ground" in TASK_KINDS


def _surface_distance(point: np.ndarray, prim) -> float:
    """Distance from ``point`` to the surface of a Box or Cylinder primitive."""
    if isinstance(prim, Box):
        inside = np.all(point >= prim.lo) and np.all(point <= prim.hi)
        if inside:
            return float(min((point - prim.lo).min(), (prim.hi - point).min()))
        return float(
            np.linalg.norm(np.maximum(prim.lo - point, 0) + np.maximum(point - prim.hi, 0))
        )
    r = float(np.hypot(point[0] - prim.cx, point[1] - prim.cy))
    dr, dz = r - prim.radius, max(prim.z0 - point[2], point[2] - prim.z1)
    if dr <= 0 and dz <= 0:
        return -max(dr, dz)
    return float(np.hypot(max(dr, 0), max(dz, 0)))


@settings(max_examples=10, deadline=None)
@given(st.integers(0, 10**6))
def test_surface_clicks_land_on_the_seen_surface_of_the_clicked_object(seed):
    scene = make_scene(seed)
    views = render_scene(scene, 4, 64)
    seen = visible_pixels(views, len(scene.objects))
    tasks = make_tasks(scene, np.random.default_rng(seed), visible=seen, surface=views)
    inside = make_tasks(scene, np.random.default_rng(seed), visible=seen)
    assert [(t.kind, t.target) for t in tasks] == [(t.kind, t.target) for t in inside]
    clicked = [t for t in tasks if t.kind in ("caption", "color", "category")]
    assert clicked
    for t in clicked:
        obj, point = scene.objects[t.target], t.clicks[0].astype(float)
        # on the clicked object's skin (render depth is exact up to float32), nowhere else
        on = min(_surface_distance(point, p) for p in obj.primitives)
        assert on < 2e-3, (t.target, point, on)
        for j, other in enumerate(scene.objects):
            if j != t.target:
                assert min(_surface_distance(point, p) for p in other.primitives) > on


def test_surface_click_is_none_for_an_unseen_object():
    scene = make_scene(3)
    views = render_scene(scene, 2, 32)
    views.labels[:] = -1
    assert surface_click(views, 0, np.random.default_rng(0)) is None
