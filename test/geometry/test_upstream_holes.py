"""`upstream` mode keeps depth holes the way the released pipeline does (reference §2.3, §2.6).

Upstream divides the raw uint16 PNG by the depth scale and masks nothing: a 0 unprojects to
the camera centre and is pooled like any point, a 65535 lands at 65535 / scale (65.535 m at
scale 1000) along its ray. ``robust`` mode keeps leaving both out.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from llava3d_ros.geometry.cameras import plan_resize_crop, resize_crop_intrinsics
from llava3d_ros.geometry.depth import decode_depth, resize_crop_nearest, upstream_depth
from llava3d_ros.geometry.unproject import (
    patch_points_robust,
    patch_points_upstream,
    patches_to_world,
)
from llava3d_ros.geometry.voxels import voxelize

from .realdata import SEVEN, need, seven_frame

K = np.array([[500.0, 0.0, 319.5], [0.0, 500.0, 239.5], [0.0, 0.0, 1.0]])
PLAN = plan_resize_crop(640, 480, 336)
HOLES = [(3, 4), (3, 5), (10, 17), (20, 2), (23, 23)]  # patches (row, col)


def plane_mm(value_mm: int = 2000) -> np.ndarray:
    """A 640×480 uint16 plane, slightly tilted so that it spans several voxels in depth too."""
    rows = np.arange(480, dtype=np.float64)[:, None]
    return np.broadcast_to(value_mm + 2.0 * rows, (480, 640)).astype(np.uint16).copy()


def block(i: int, j: int) -> tuple[slice, slice]:
    """The 20×20 full-resolution pixels patch (i, j) owns for 640×480 → 336 (crop from col 80)."""
    return slice(20 * i, 20 * i + 20), slice(80 + 20 * j, 100 + 20 * j)


def camera() -> np.ndarray:
    pose = np.eye(4)
    pose[:3, :3] = [[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]]  # optical → z-up
    pose[:3, 3] = [0.9, -1.3, 1.1]
    return pose


def test_zero_depth_patches_pool_into_one_extra_voxel_at_the_camera_centre() -> None:
    raw = plane_mm()
    hole = np.zeros((24, 24), dtype=bool)
    for i, j in HOLES:
        raw[block(i, j)] = 0
        hole[i, j] = True
    depth = decode_depth(raw, 1000.0)
    pose = camera()

    up = patch_points_upstream(depth, K, PLAN)
    assert up.pooled.all()
    np.testing.assert_array_equal(up.valid, ~hole)  # measured depth: everything but the holes
    world = patches_to_world(up.cam_xyz, pose).reshape(-1, 3)
    centre = pose[:3, 3].astype(np.float32)
    np.testing.assert_array_equal(world[hole.reshape(-1)], np.broadcast_to(centre, (len(HOLES), 3)))

    a = voxelize(torch.from_numpy(world), torch.from_numpy(up.pooled.reshape(-1)))
    without = voxelize(torch.from_numpy(world[~hole.reshape(-1)]))
    assert a.num_voxels == without.num_voxels + 1  # N + 1 tokens, N without the holes
    members = a.patch_to_voxel.numpy()
    cam_voxel = members[hole.reshape(-1)]
    assert (cam_voxel == cam_voxel[0]).all()  # one voxel holds all the holes ...
    assert np.array_equal(members == cam_voxel[0], hole.reshape(-1))  # ... and only them
    np.testing.assert_array_equal(a.voxel_centers[cam_voxel[0]].numpy(), centre)

    rb = patch_points_robust(depth, K, PLAN)
    np.testing.assert_array_equal(rb.pooled, ~hole)
    np.testing.assert_array_equal(rb.valid, ~hole)
    rw = patches_to_world(rb.cam_xyz, pose).reshape(-1, 3)
    r = voxelize(torch.from_numpy(rw), torch.from_numpy(rb.pooled.reshape(-1)))
    assert (r.patch_to_voxel[torch.from_numpy(hole.reshape(-1))] == -1).all()
    assert not (np.abs(r.voxel_centers.numpy() - centre).max(axis=1) < 0.2).any()


@pytest.mark.parametrize(("scale", "metres"), [(1000.0, 65.535), (5000.0, 13.107)])
def test_65535_is_unprojected_at_65535_over_scale_along_its_ray(
    scale: float, metres: float
) -> None:
    raw = plane_mm()
    raw[block(7, 9)] = 65535
    depth = decode_depth(raw, scale)
    assert np.isnan(depth[block(7, 9)]).all()  # a hole for everything that masks depth
    up = patch_points_upstream(depth, K, PLAN)
    z = np.float32(65535) / np.float32(scale)  # upstream's float32 division of the PNG value
    assert z == np.float32(metres)
    p = up.cam_xyz[7, 9]
    assert p[2] == z
    k = resize_crop_intrinsics(K, PLAN)
    u, v = 9 * 14, 7 * 14  # the patch's top-left pixel at 336
    expect = [(u - k[0, 2]) * z / k[0, 0], (v - k[1, 2]) * z / k[1, 1]]
    np.testing.assert_allclose(p[:2], expect, rtol=1e-6)  # torch float32 against float64
    # the same ray as the plane point it replaced
    ref = patch_points_upstream(decode_depth(plane_mm(), scale), K, PLAN).cam_xyz[7, 9]
    np.testing.assert_allclose(p / p[2], ref / ref[2], rtol=0, atol=1e-6)
    assert up.pooled[7, 9] and not up.valid[7, 9]
    rb = patch_points_robust(depth, K, PLAN)
    assert not rb.pooled[7, 9] and not rb.valid[7, 9]
    # bf16 (compat) does not trip over it either: 65.535 → 65.5 in bfloat16, like upstream
    bf = patch_points_upstream(depth, K, PLAN, compat_bf16=True)
    assert bf.cam_xyz[7, 9, 2] == float(torch.tensor(z).to(torch.bfloat16))


def test_65535_at_a_non_integer_scale_falls_back_to_the_camera_centre() -> None:
    raw = plane_mm()
    raw[block(1, 1)] = 65535
    up = patch_points_upstream(decode_depth(raw, 1000.5), K, PLAN)
    np.testing.assert_array_equal(up.cam_xyz[1, 1], 0.0)
    assert up.pooled[1, 1] and not up.valid[1, 1]


def test_nan_and_inf_depth_sit_at_the_camera_centre_without_crashing() -> None:
    depth = decode_depth(plane_mm(), 1000.0)
    depth[block(0, 0)] = np.nan
    depth[block(0, 1)] = np.inf
    depth[block(0, 2)] = -np.inf
    depth.view(np.uint32)[block(0, 3)] = 0xFFC00000  # the NaN x86 arithmetic makes
    for bf16 in (False, True):
        up = patch_points_upstream(depth, K, PLAN, compat_bf16=bf16)
        assert np.isfinite(up.cam_xyz).all() and up.pooled.all()
        np.testing.assert_array_equal(up.cam_xyz[0, :4], 0.0)
        assert not up.valid[0, :4].any() and up.valid[0, 4:].all()
        world = patches_to_world(up.cam_xyz, camera(), compat_bf16=bf16).reshape(-1, 3)
        a = voxelize(torch.from_numpy(world), torch.from_numpy(up.pooled.reshape(-1)))
        assert (a.patch_to_voxel >= 0).all()


def test_upstream_depth_keeps_finite_values_bit_exact() -> None:
    rng = np.random.default_rng(3)
    d = rng.uniform(0.0, 9.0, (31, 17)).astype(np.float32)
    d[0, 0] = 0.0
    out = upstream_depth(d)
    assert out.dtype == np.float32 and out.tobytes() == d.tobytes()
    assert out is not d


def _reference_numpy(raw: np.ndarray, k3: np.ndarray, pose: np.ndarray) -> np.ndarray:
    """Reference §2 (exact arithmetic) written out in numpy: Pillow NEAREST resize + crop, ÷1000
    in float32, 4×4 K scaled and shifted, every pixel unprojected with pixel index = coordinate,
    float32 ``pose @ [x, y, z, 1]`` / w, then the top-left pixel of every 14×14 patch."""
    h, w = raw.shape
    s = 336 / min(w, h)
    new_w, new_h = int(w * s), int(h * s)
    img = Image.fromarray(raw).resize((new_w, new_h), Image.NEAREST)
    img = img.crop(((new_w - 336) / 2, (new_h - 336) / 2, (new_w + 336) / 2, (new_h + 336) / 2))
    z = np.asarray(img).astype(np.float32) / np.float32(1000.0)
    k = np.eye(4)
    k[:3, :3] = k3
    k[0] /= w / new_w
    k[1] /= h / new_h
    k[0, 2] -= (new_w - new_h) / 2
    k = k.astype(np.float32)
    v, u = np.meshgrid(np.arange(336), np.arange(336), indexing="ij")
    x = (u.astype(np.float32) - k[0, 2]) * z / k[0, 0]
    y = (v.astype(np.float32) - k[1, 2]) * z / k[1, 1]
    cam = np.stack([x, y, z, np.ones_like(z)], axis=-1).reshape(-1, 4)
    world = pose.astype(np.float32) @ cam.T
    world = (world[:3] / world[3:]).T.reshape(336, 336, 3)
    return world[::14, ::14]


def test_real_frame_upstream_points_equal_the_reference_formula() -> None:
    """7-Scenes frame 160 (its pose as given: |RRᵀ−I| ≈ 1.5e-4), with a 65535 block added."""
    need(SEVEN)
    _, raw, pose, k = seven_frame(160)
    raw = raw.copy()
    raw[block(5, 5)] = 65535
    assert (raw == 0).any()
    ours_pts = patch_points_upstream(decode_depth(raw, 1000.0), k, PLAN)
    ours = patches_to_world(ours_pts.cam_xyz, pose)
    ref = _reference_numpy(raw, k, pose)
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-6)
    zero = resize_crop_nearest(raw, PLAN)[::14, ::14] == 0
    assert zero.any() and ours_pts.pooled.all()
    np.testing.assert_array_equal(
        ours[zero], np.broadcast_to(pose[:3, 3].astype(np.float32), (int(zero.sum()), 3))
    )
    assert ours_pts.cam_xyz[5, 5, 2] == np.float32(65.535)
