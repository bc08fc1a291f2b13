"""Scene generator and renderer: determinism, analytic depth, unprojection onto surfaces."""

from __future__ import annotations

import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llava3d_ros.synthetic.render import (
    CEILING,
    FLOOR,
    WALL,
    intrinsics_for,
    look_at,
    render_scene,
    render_views,
)
from llava3d_ros.synthetic.scenes import (
    CATEGORIES,
    COLORS,
    MAX_OBJECTS,
    MIN_OBJECTS,
    Box,
    Cylinder,
    Scene,
    SceneObject,
    make_scene,
    primitive_bounds,
)


def _one_object_scene(prims) -> Scene:
    obj = SceneObject("cabinet", "red", "small", prims)
    return Scene(0, 6.0, 6.0, 2.6, np.full(3, 0.5), np.full(3, 0.8), [obj])


def _unproject(depth: np.ndarray, k: np.ndarray, pose: np.ndarray) -> np.ndarray:
    """The downstream convention: integer pixel index, x = (u - cx) d / fx."""
    v, u = np.mgrid[0 : depth.shape[0], 0 : depth.shape[1]]
    cam = np.stack([(u - k[0, 2]) * depth / k[0, 0], (v - k[1, 2]) * depth / k[1, 1], depth], -1)
    return cam @ pose[:3, :3].T + pose[:3, 3]


def test_same_seed_same_scene_and_views():
    a, b = make_scene(11), make_scene(11)
    assert [o.name for o in a.objects] == [o.name for o in b.objects]
    np.testing.assert_array_equal(a.boxes, b.boxes)
    ra = render_scene(a, 4, 48, depth_noise=0.01, hole_fraction=0.05)
    rb = render_scene(b, 4, 48, depth_noise=0.01, hole_fraction=0.05)
    for field in ("rgb", "depth", "labels", "cam_to_world", "intrinsics"):
        np.testing.assert_array_equal(getattr(ra, field), getattr(rb, field))
    assert not np.array_equal(make_scene(12).boxes, a.boxes)


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 10**6))
def test_scene_invariants(seed):
    scene = make_scene(seed)
    assert MIN_OBJECTS <= len(scene.objects) <= MAX_OBJECTS
    for obj in scene.objects:
        assert obj.category in CATEGORIES and obj.color in COLORS
        lo, hi = primitive_bounds(obj.primitives)
        box_lo, box_hi = obj.box[:3] - obj.box[3:] / 2, obj.box[:3] + obj.box[3:] / 2
        np.testing.assert_allclose([box_lo, box_hi], [lo, hi], atol=1e-12)
        assert box_lo[2] == 0.0  # standing on the floor
        assert abs(obj.box[0]) + obj.box[3] / 2 < scene.width / 2
        assert abs(obj.box[1]) + obj.box[4] / 2 < scene.depth / 2
    # Footprints never overlap.
    boxes = scene.boxes
    for i in range(len(boxes)):
        for j in range(i + 1, len(boxes)):
            gap = np.abs(boxes[i, :2] - boxes[j, :2]) - (boxes[i, 3:5] + boxes[j, 3:5]) / 2
            assert np.any(gap > 0), (i, j)


def test_box_face_depth_is_analytic():
    scene = _one_object_scene([Box(np.array([-0.5, -0.25, 0.0]), np.array([0.5, 0.25, 1.0]))])
    pose = look_at(np.array([0.0, -2.0, 0.5]), np.array([0.0, 0.0, 0.5]))
    views = render_views(scene, pose[None], intrinsics_for(64, 60.0), 64)
    on_box = views.labels[0] == 0
    assert on_box.sum() > 100
    # Camera faces the front face squarely: every box pixel is on the plane y = -0.25.
    np.testing.assert_allclose(views.depth[0][on_box], 1.75, atol=1e-9)
    assert views.labels[0][63, 32] == FLOOR and views.labels[0][0, 32] in (WALL, CEILING)


def test_cylinder_depth_is_analytic():
    scene = _one_object_scene([Cylinder(0.0, 0.0, 0.3, 0.0, 1.0)])
    pose = look_at(np.array([0.0, -3.0, 0.5]), np.array([0.0, 0.0, 0.5]))
    k = intrinsics_for(65, 60.0)  # odd size: the centre pixel lies on the optical axis
    views = render_views(scene, pose[None], k, 65)
    assert views.labels[0][32, 32] == 0
    assert views.depth[0][32, 32] == pytest.approx(2.7, abs=1e-9)


def test_pose_is_opencv_optical_and_projects_target_to_centre():
    eye, target = np.array([1.0, -2.0, 1.8]), np.array([-0.5, 0.7, 0.4])
    pose = look_at(eye, target)
    r = pose[:3, :3]
    np.testing.assert_allclose(r.T @ r, np.eye(3), atol=1e-12)
    assert np.linalg.det(r) == pytest.approx(1.0)
    assert (r[:, 1] @ [0, 0, 1]) < 0  # image y points down in the world
    k = intrinsics_for(97, 70.0)
    cam = r.T @ (target - eye)
    np.testing.assert_allclose((k @ cam)[:2] / cam[2], [k[0, 2], k[1, 2]], atol=1e-9)


def test_unprojected_depth_lands_on_surfaces():
    scene = make_scene(5)
    views = render_scene(scene, 6, 64)
    for depth, labels, pose in zip(views.depth, views.labels, views.cam_to_world, strict=True):
        xyz = _unproject(depth, views.intrinsics, pose)
        np.testing.assert_allclose(xyz[labels == FLOOR][:, 2], 0.0, atol=1e-6)
        np.testing.assert_allclose(xyz[labels == CEILING][:, 2], scene.height, atol=1e-6)
        wall = xyz[labels == WALL]
        off = np.minimum(
            np.abs(np.abs(wall[:, 0]) - scene.width / 2),
            np.abs(np.abs(wall[:, 1]) - scene.depth / 2),
        )
        assert off.max() < 1e-6
        for i, obj in enumerate(scene.objects):
            pts = xyz[labels == i]
            lo, hi = obj.box[:3] - obj.box[3:] / 2, obj.box[:3] + obj.box[3:] / 2
            assert np.all(pts >= lo - 1e-6) and np.all(pts <= hi + 1e-6)
            assert all(_on_surface(p, obj.primitives) for p in pts[::7])


def _on_surface(p: np.ndarray, prims) -> bool:
    for prim in prims:
        if isinstance(prim, Box):
            inside = np.all(p >= prim.lo - 1e-6) and np.all(p <= prim.hi + 1e-6)
            on_face = np.min(np.abs(np.concatenate([p - prim.lo, prim.hi - p]))) < 1e-6
            if inside and on_face:
                return True
        else:
            r = np.hypot(p[0] - prim.cx, p[1] - prim.cy)
            in_z = prim.z0 - 1e-6 <= p[2] <= prim.z1 + 1e-6
            on_cap = min(abs(p[2] - prim.z0), abs(p[2] - prim.z1)) < 1e-6 and r <= prim.radius
            if in_z and (abs(r - prim.radius) < 1e-6 or on_cap):
                return True
    return False


def test_every_object_is_seen_by_the_orbit():
    seen = []
    for seed in range(20):
        scene = make_scene(seed)
        labels = render_scene(scene, 8, 64).labels
        seen += [np.any(labels == i) for i in range(len(scene.objects))]
    assert np.mean(seen) > 0.95


def test_colours_stay_recognisable():
    scene = make_scene(2)
    views = render_scene(scene, 8, 64)
    for i, obj in enumerate(scene.objects):
        pix = views.rgb[views.labels == i].astype(float)
        if len(pix) == 0:
            continue
        # The median pixel is closest in hue to its own palette colour.
        med = np.median(pix, axis=0)
        names = list(COLORS)
        sims = [
            med @ np.array(COLORS[n]) / np.linalg.norm(COLORS[n]) / np.linalg.norm(med)
            for n in names
        ]
        assert names[int(np.argmax(sims))] == obj.color


def test_noise_and_holes():
    scene = make_scene(3)
    clean = render_scene(scene, 2, 64)
    noisy = render_scene(scene, 2, 64, depth_noise=0.01, hole_fraction=0.1)
    holes = noisy.depth == 0
    assert 0.07 < holes.mean() < 0.13
    rel = noisy.depth[~holes] / clean.depth[~holes] - 1
    assert 0.007 < rel.std() < 0.013
    np.testing.assert_array_equal(noisy.rgb, clean.rgb)


def test_bad_arguments_raise():
    scene = make_scene(0)
    with pytest.raises(ValueError):
        make_scene(0, n_objects=9)
    with pytest.raises(ValueError):
        render_scene(scene, 0)
    with pytest.raises(ValueError):
        intrinsics_for(64, 200.0)
    with pytest.raises(ValueError):
        look_at(np.zeros(3), np.array([0.0, 0.0, -1.0]))
    with pytest.raises(ValueError):
        render_views(scene, np.eye(4), intrinsics_for(8, 60), 8)


def test_render_speed_smoke():
    start = time.perf_counter()
    for seed in range(10):
        render_scene(make_scene(seed), 8, 112)
    # ~45 ms per scene here; the bound only catches a lost vectorisation.
    assert (time.perf_counter() - start) / 10 < 0.3
