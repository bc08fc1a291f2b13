"""FrameBuffer in `upstream` mode: poses exactly as given, depth holes pooled as upstream does.

``robust`` keeps re-orthonormalising poses and leaving holes out (reference §2.3, §2.5–2.9).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from llava3d_ros.geometry.unproject import orthonormalize
from llava3d_ros.geometry.voxels import voxelize
from llava3d_ros.scene.buffer import FrameBuffer
from llava3d_ros.scene.frame import Frame

K = np.array([[500.0, 0.0, 319.5], [0.0, 500.0, 239.5], [0.0, 0.0, 1.0]])
S = 1_000_000_000
HOLES = [(2, 3), (2, 4), (9, 15), (17, 6), (23, 0)]


def camera(scale: float = 1.0, shear: float = 0.0) -> np.ndarray:
    """A z-up world camera at (0.9, −1.3, 1.1) looking along +x; rotation scaled / sheared."""
    pose = np.eye(4)
    r = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])
    r = r @ _about_optical_z(0.3)
    r = r * scale
    r[0, 1] += shear
    pose[:3, :3] = r
    pose[:3, 3] = [0.9, -1.3, 1.1]
    return pose


def _about_optical_z(a: float) -> np.ndarray:
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def raw_depth(holes: list[tuple[int, int]] = HOLES) -> np.ndarray:
    """640×480 uint16 mm: a tilted plane 2–3 m away, whole patch footprints zeroed at ``holes``."""
    rows = np.arange(480, dtype=np.float64)[:, None]
    d = np.broadcast_to(2000.0 + 2.0 * rows, (480, 640)).astype(np.uint16).copy()
    for i, j in holes:
        d[20 * i : 20 * i + 20, 80 + 20 * j : 100 + 20 * j] = 0  # what patch (i, j) owns
    return d


def frame(pose: np.ndarray, depth: np.ndarray | None = None, stamp: int = S) -> Frame:
    rgb = np.zeros((480, 640, 3), dtype=np.uint8)
    return Frame.from_raw(rgb, raw_depth() if depth is None else depth, K, pose, stamp)


def tokens(buf: FrameBuffer):
    """Voxel assignment of the buffer's views, as the engine pools them (patch_valid = pooled)."""
    views = buf.views().views
    xyz = np.concatenate([v.patch_xyz.reshape(-1, 3) for v in views])
    valid = np.concatenate([v.patch_valid.reshape(-1) for v in views])
    xyz = np.where(valid[:, None], xyz, 0.0).astype(np.float32)
    return voxelize(torch.from_numpy(xyz), torch.from_numpy(valid)), xyz


def test_zero_depth_patches_give_one_extra_token_at_the_camera_centre() -> None:
    hole = np.zeros((24, 24), dtype=bool)
    for i, j in HOLES:
        hole[i, j] = True
    hole = hole.reshape(-1)
    pose = camera()
    counts = {}
    for mode in ("upstream", "robust"):
        buf = FrameBuffer(mode=mode)
        buf.add(frame(pose))
        a, xyz = tokens(buf)
        counts[mode] = a.num_voxels
        if mode == "upstream":
            centre = pose[:3, 3].astype(np.float32)
            np.testing.assert_array_equal(xyz[hole], np.broadcast_to(centre, (len(HOLES), 3)))
            members = a.patch_to_voxel.numpy()
            assert (members >= 0).all()
            cam = members[hole][0]
            assert np.array_equal(members == cam, hole)  # exactly the zero-depth patches
            np.testing.assert_array_equal(a.voxel_centers[cam].numpy(), centre)
            # N without the holes: the same points, holes left out
            without = voxelize(torch.from_numpy(xyz[~hole]))
            assert a.num_voxels == without.num_voxels + 1
        else:
            assert (a.patch_to_voxel.numpy()[hole] == -1).all()
    # robust places patches at their centres (not top-left pixels), so its N differs a little
    assert counts["robust"] > 100


@pytest.mark.parametrize(
    ("scale", "shear"), [(1.0005, 0.0), (1.0, 2e-3)], ids=["scaled-1.0005", "shear-2e-3"]
)
def test_non_orthonormal_pose_is_used_bit_exactly_in_upstream_mode(
    scale: float, shear: float
) -> None:
    given = camera(scale, shear)
    r = given[:3, :3]
    assert 1e-4 < np.abs(r @ r.T - np.eye(3)).max() < 1e-2  # off, but within as_pose's tol
    f = frame(given)
    assert f.cam_to_world.tobytes() == given.tobytes()  # Frame keeps it as given

    up = FrameBuffer(mode="upstream")
    fid = up.add(f)
    kf = up.keyframe(fid)
    assert kf.frame.cam_to_world.tobytes() == given.tobytes()
    view = up.views().views[0]
    assert view.cam_to_world.tobytes() == given.tobytes()
    cam = kf.points.cam_xyz.reshape(-1, 3)
    # upstream's arithmetic: float32 pose @ [x, y, z, 1], divided by w
    homog = np.concatenate([cam, np.ones_like(cam[:, :1])], axis=1)
    world = given.astype(np.float32) @ homog.T
    manual = (world[:3] / world[3:]).T
    np.testing.assert_array_equal(view.patch_xyz.reshape(-1, 3), manual)
    # and that is R @ p + t with the given matrix (float64), to float32 rounding
    np.testing.assert_allclose(
        view.patch_xyz.reshape(-1, 3), cam @ r.T + given[:3, 3], rtol=0, atol=2e-6
    )

    rb = FrameBuffer(mode="robust")
    fid = rb.add(frame(given))
    pose = rb.keyframe(fid).frame.cam_to_world
    expect = given.copy()
    expect[:3, :3] = orthonormalize(r)
    np.testing.assert_array_equal(pose, expect)
    rview = rb.views().views[0]
    rcam = rb.keyframe(fid).points.cam_xyz.reshape(-1, 3)
    np.testing.assert_allclose(
        rview.patch_xyz.reshape(-1, 3), rcam @ expect[:3, :3].T + given[:3, 3], atol=2e-6
    )
    # the given (non-rigid) matrix would put them elsewhere: by ~ |ΔR| · 2–3 m ≥ 0.5 mm
    off = np.abs(rview.patch_xyz.reshape(-1, 3) - (rcam @ r.T + given[:3, 3])).max()
    assert off > 5e-4


def test_pose_updates_follow_the_mode() -> None:
    given = camera(1.0005)
    fixed = given.copy()
    fixed[:3, :3] = orthonormalize(given[:3, :3])
    for mode, expect in (("upstream", given), ("robust", fixed)):
        buf = FrameBuffer(mode=mode)
        buf.add(frame(camera()))
        assert not buf.would_keep(2 * S, given)  # same place: not novel either way
        assert buf.update_pose(S, given)
        np.testing.assert_array_equal(buf.keyframe(0).frame.cam_to_world, expect)
