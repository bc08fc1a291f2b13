"""Undistortion: a real frame warped by a known lens comes back; clicks land on the true point."""

from __future__ import annotations

import functools

import cv2
import numpy as np
import pytest

from llava3d_ros.geometry.distortion import (
    CACHE_SIZE,
    DistortionError,
    Undistorter,
    cache_info,
    clear_cache,
)
from llava3d_ros.geometry.errors import GeometryError

from .realdata import seven_frame

K = np.array([[585.0, 0.0, 320.0], [0.0, 585.0, 240.0], [0.0, 0.0, 1.0]])
PLUMB_BOB = [-0.28, 0.07, 1e-3, -5e-4, 0.0]
RATIONAL = [-0.3, 0.1, 1e-3, -5e-4, 0.01, 0.02, 0.01, 0.005]
FISHEYE = [0.05, -0.02, 0.01, -0.002]
CRITERIA = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 200, 1e-14)


def _valid(d: np.ndarray) -> np.ndarray:
    return (d > 0) & (d < 65535)


def _opencv_undistort_points(pts: np.ndarray, k: np.ndarray, d: list[float]) -> np.ndarray:
    """OpenCV's own inverse of the lens (pixels → pixels with P = K), iterated to convergence."""
    pts = np.asarray(pts, np.float64).reshape(-1, 1, 2)
    if hasattr(cv2, "undistortPointsIter"):  # OpenCV 4.x
        out = cv2.undistortPointsIter(pts, k, np.asarray(d), np.eye(3), k, CRITERIA)
    else:
        out = cv2.undistortPoints(pts, k, np.asarray(d), R=np.eye(3), P=k, criteria=CRITERIA)
    return out.reshape(-1, 2)


def _project(k: np.ndarray, d: list[float], uv_undistorted: np.ndarray) -> np.ndarray:
    """The lens forward model with cv2.projectPoints: undistorted pixels → distorted pixels."""
    uv = np.asarray(uv_undistorted, np.float64).reshape(-1, 2)
    xy1 = np.c_[(uv - k[:2, 2]) / [k[0, 0], k[1, 1]], np.ones(len(uv))]
    out, _ = cv2.projectPoints(xy1, np.zeros(3), np.zeros(3), k, np.asarray(d))
    return out.reshape(-1, 2)


@functools.cache
def _warped_frame() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """rgb, depth (pinhole), and both as the plumb_bob lens would have seen them, plus K."""
    rgb, depth, _, k = seven_frame(150)
    h, w = depth.shape
    grid = np.stack(np.meshgrid(np.arange(w), np.arange(h)), axis=-1).reshape(-1, 2)
    # where each distorted pixel comes from in the pinhole image: the lens's inverse
    src = _opencv_undistort_points(grid, k, PLUMB_BOB).reshape(h, w, 2).astype(np.float32)
    mx, my = src[..., 0], src[..., 1]
    depth_d = cv2.remap(depth, mx, my, cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT)
    rgb_d = cv2.remap(rgb, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
    return rgb, depth, rgb_d, depth_d, k


def test_real_depth_comes_back_after_the_lens() -> None:
    rgb, depth, rgb_d, depth_d, k = _warped_frame()
    h, w = depth.shape
    und = Undistorter(w, h, k, PLUMB_BOB, "plumb_bob")
    depth_u = und.depth(depth_d)
    assert depth_u.dtype == np.uint16 and depth_u.shape == depth.shape
    interior = np.zeros_like(depth, bool)
    interior[10:-10, 10:-10] = True
    # the lens did move the content: the distorted depth differs from the pinhole one a lot
    moved = interior & _valid(depth) & _valid(depth_d)
    assert (np.abs(depth_d.astype(int) - depth)[moved] > 20).mean() > 0.1
    both = interior & _valid(depth) & _valid(depth_u)
    assert both.sum() > 0.85 * interior.sum()
    diff = np.abs(depth_u.astype(int) - depth)[both]
    assert np.median(diff) == 0
    assert (diff == 0).mean() > 0.93  # nearest twice: exact but for a pixel off at depth edges
    assert (diff <= 10).mean() > 0.97
    # the undistorted image covers what the pinhole one does (nothing but the lens's own loss)
    assert (_valid(depth_u) == _valid(depth))[interior].mean() > 0.97


def test_depth_remap_only_copies_input_values() -> None:
    _, _, _, depth_d, k = _warped_frame()
    und = Undistorter(depth_d.shape[1], depth_d.shape[0], k, PLUMB_BOB, "plumb_bob")
    out = und.depth(depth_d)
    assert np.isin(out, np.unique(depth_d)).all()
    # float depth: every output is an input depth or NaN (never a blend of two)
    rng = np.random.default_rng(3)
    metres = rng.uniform(0.5, 6.0, depth_d.shape).astype(np.float32)
    metres[rng.random(metres.shape) < 0.1] = np.nan
    out_m = und.depth(metres)
    assert out_m.dtype == np.float32
    finite = out_m[np.isfinite(out_m)]
    assert finite.size > 0.8 * metres.size
    assert np.isin(finite, metres[np.isfinite(metres)]).all()


def test_colour_comes_back_after_the_lens() -> None:
    rgb, _, rgb_d, _, k = _warped_frame()
    und = Undistorter(rgb.shape[1], rgb.shape[0], k, PLUMB_BOB, "plumb_bob")
    rgb_u = und.color(rgb_d)
    assert rgb_u.dtype == np.uint8 and rgb_u.shape == rgb.shape
    diff = np.abs(rgb_u.astype(int) - rgb)[10:-10, 10:-10]
    assert diff.mean() < 1.5  # two bilinear resamplings of a sharp photo
    naive = np.abs(rgb_d.astype(int) - rgb)[10:-10, 10:-10]
    assert naive.mean() > 5 * diff.mean()


def _corner_clicks(depth: np.ndarray, k: np.ndarray, per_corner: int = 5) -> list[tuple]:
    """Clicks near each corner of the distorted image, with the 3D point they truly show.

    Built forwards: pinhole pixels with a smooth depth neighbourhood are pushed through the
    lens (cv2.projectPoints); the ones landing nearest 30 px from each distorted corner are the
    clicks. (With k1 = −0.28 the last ~37 px of the distorted corners see beyond the pinhole
    image, so the nearest clicks are 30-45 px from the corner.)
    """
    h, w = depth.shape
    kinv = np.linalg.inv(k)
    grid = np.stack(np.meshgrid(np.arange(w), np.arange(h)), -1).reshape(-1, 2)
    dist = _project(k, PLUMB_BOB, grid)
    pad = np.pad(depth.astype(np.int64), 2, constant_values=0)
    win = np.stack([pad[dy : dy + h, dx : dx + w] for dy in range(5) for dx in range(5)])
    smooth = (win > 0).all(0) & (win < 65535).all(0) & (win.max(0) - win.min(0) <= 30)
    smooth = smooth.reshape(-1)
    clicks = []
    for tu, tv in [(30, 30), (w - 31, 30), (30, h - 31), (w - 31, h - 31)]:
        gap = np.hypot(dist[:, 0] - tu, dist[:, 1] - tv)
        gap[~smooth] = np.inf
        for i in np.argsort(gap)[:per_corner]:
            u0, v0 = grid[i]
            truth = depth[v0, u0] / 1000.0 * (kinv @ [u0, v0, 1.0])
            clicks.append((dist[i], (u0, v0), truth, (tu, tv)))
    return clicks


def test_corner_clicks_land_on_the_true_3d_point() -> None:
    _, depth, _, depth_d, k = _warped_frame()
    h, w = depth.shape
    und = Undistorter(w, h, k, PLUMB_BOB, "plumb_bob")
    depth_u = und.depth(depth_d)
    kinv = np.linalg.inv(k)
    errors, naive_errors = [], []
    for click, (u0, v0), truth, corner in _corner_clicks(depth, k):
        assert np.hypot(click[0] - corner[0], click[1] - corner[1]) < 16
        up, vp = und.undistort_pixel(float(click[0]), float(click[1]))
        assert abs(up - u0) < 0.05 and abs(vp - v0) < 0.05, "the click maps to its pinhole pixel"
        z = depth_u[int(round(vp)), int(round(up))] / 1000.0
        point = z * (kinv @ [up, vp, 1.0])
        errors.append(np.linalg.norm(point - truth))
        # ignoring the lens: the click unprojected as if the distorted image were pinhole
        zn = depth_d[int(round(click[1])), int(round(click[0]))] / 1000.0
        naive_errors.append(np.linalg.norm(zn * (kinv @ [click[0], click[1], 1.0]) - truth))
    errors_cm = 100 * np.asarray(errors)
    print(
        f"corner clicks ({len(errors)}): mean {errors_cm.mean():.2f} cm, "
        f"max {errors_cm.max():.2f} cm; ignoring the lens: mean "
        f"{100 * np.mean(naive_errors):.1f} cm"
    )
    assert errors_cm.max() < 3.0
    assert min(naive_errors) > 0.05  # the test is sensitive: without undistortion ≥ 5 cm off


def test_clicks_past_the_corners_leave_the_undistorted_image() -> None:
    # barrel distortion with P = K: the distorted corners are cropped away by undistortion
    und = Undistorter(640, 480, K, PLUMB_BOB, "plumb_bob")
    u, v = und.undistort_pixel(0.0, 0.0)
    assert u < -40 and v < -30
    np.testing.assert_allclose(und.distort_pixel(u, v), (0.0, 0.0), atol=1e-6)


@pytest.mark.parametrize(
    ("model", "d"), [("plumb_bob", PLUMB_BOB), ("rational_polynomial", RATIONAL)]
)
def test_pinhole_family_points_round_trip(model: str, d: list[float]) -> None:
    und = Undistorter(640, 480, K, d, model)
    grid = np.stack(np.meshgrid(np.linspace(0, 639, 17), np.linspace(0, 479, 13)), -1)
    undistorted = grid.reshape(-1, 2)
    distorted = _project(K, d, undistorted)  # OpenCV's forward model
    back = und.undistort_pixels(distorted)
    assert np.abs(back - undistorted).max() < 0.05
    np.testing.assert_allclose(und.distort_pixels(undistorted), distorted, atol=1e-6)
    u, v = und.undistort_pixel(*distorted[5])
    assert isinstance(u, float) and abs(u - undistorted[5, 0]) < 0.05


def test_fisheye_points_round_trip() -> None:
    und = Undistorter(640, 480, K, FISHEYE, "equidistant")
    grid = np.stack(np.meshgrid(np.linspace(0, 639, 17), np.linspace(0, 479, 13)), -1)
    undistorted = grid.reshape(-1, 2)
    normalised = (undistorted - K[:2, 2]) / [K[0, 0], K[1, 1]]
    distorted = cv2.fisheye.distortPoints(
        normalised.reshape(-1, 1, 2), K, np.asarray(FISHEYE)
    ).reshape(-1, 2)
    assert np.abs(distorted - undistorted).max() > 1.0  # the lens does something
    back = und.undistort_pixels(distorted)
    assert np.abs(back - undistorted).max() < 0.05
    np.testing.assert_allclose(und.distort_pixels(undistorted), distorted, atol=1e-6)


@pytest.mark.parametrize(
    ("model", "d"),
    [("plumb_bob", PLUMB_BOB), ("rational_polynomial", RATIONAL), ("equidistant", FISHEYE)],
)
def test_remap_tables_agree_with_the_point_model(model: str, d: list[float]) -> None:
    und = Undistorter(64, 48, K / [10, 10, 1], d, model)
    nearest = und.maps().nearest
    for u, v in [(3, 4), (32, 24), (60, 45), (10, 40)]:
        du, dv = und.distort_pixel(u, v)
        iu, iv = int(np.floor(du + 0.5)), int(np.floor(dv + 0.5))
        if 0 <= iu < 64 and 0 <= iv < 48:
            assert nearest[v, u] == iv * 64 + iu
    # a depth image of flat indices, undistorted, says where each pixel was read from
    src = np.arange(1, 64 * 48 + 1, dtype=np.float64).reshape(48, 64)
    out = und.depth(src)
    np.testing.assert_array_equal(
        np.nan_to_num(out, nan=0.0) - 1, np.where(nearest < 0, -1, nearest)
    )


def test_remap_tables_are_built_once_per_calibration() -> None:
    clear_cache()
    depth = np.ones((48, 64), np.uint16)
    rgb = np.zeros((48, 64, 3), np.uint8)
    first = Undistorter(64, 48, K / [10, 10, 1], PLUMB_BOB, "plumb_bob")
    first.depth(depth)
    first.color(rgb)
    for _ in range(3):  # the node builds one per message
        again = Undistorter(64, 48, (K / [10, 10, 1]).tolist(), list(PLUMB_BOB), "plumb_bob")
        again.depth(depth)
        assert again.maps() is first.maps()
    assert cache_info()["misses"] == 1 and cache_info()["hits"] == 3
    # a few other calibrations push the first out of the small LRU
    for i in range(CACHE_SIZE):
        Undistorter(64, 48, K / [10, 10, 1], [-0.1 - i / 100, 0, 0, 0, 0], "plumb_bob").maps()
    assert cache_info()["size"] == CACHE_SIZE and cache_info()["misses"] == 1 + CACHE_SIZE
    Undistorter(64, 48, K / [10, 10, 1], PLUMB_BOB, "plumb_bob").maps()
    assert cache_info()["misses"] == 2 + CACHE_SIZE
    clear_cache()


@pytest.mark.parametrize(
    ("d", "model"),
    [([0.0] * 5, "plumb_bob"), ([], ""), ([0.0] * 8, "rational_polynomial"), ([], "unknown")],
)
def test_zero_distortion_is_a_pass_through(d: list[float], model: str) -> None:
    clear_cache()
    und = Undistorter(64, 48, K / [10, 10, 1], d, model)
    assert und.is_identity
    rgb = np.zeros((48, 64, 3), np.uint8)
    depth = np.ones((48, 64), np.float32)
    assert und.color(rgb) is rgb and und.depth(depth) is depth
    assert und.undistort_pixel(3.25, 7.5) == (3.25, 7.5) == und.distort_pixel(3.25, 7.5)
    assert cache_info()["size"] == 0


@pytest.mark.parametrize(
    ("d", "model", "match"),
    [
        (PLUMB_BOB, "fisheye", "unknown distortion model"),
        (PLUMB_BOB, "", "unknown distortion model"),
        (PLUMB_BOB, "Plumb_Bob", "unknown distortion model"),
        (PLUMB_BOB[:4], "plumb_bob", "needs 5"),
        (PLUMB_BOB + [0.0] * 3, "plumb_bob", "needs 5"),
        (PLUMB_BOB, "rational_polynomial", "needs 8"),
        (PLUMB_BOB, "equidistant", "needs 4"),
        ([0.1, float("nan"), 0, 0, 0], "plumb_bob", "non-finite"),
        (["a", 0, 0, 0, 0], "plumb_bob", "numbers"),
    ],
)
def test_bad_calibrations_are_input_errors(d: list, model: str, match: str) -> None:
    with pytest.raises(DistortionError, match=match):
        Undistorter(640, 480, K, d, model)


def test_bad_sizes_intrinsics_and_images_are_rejected() -> None:
    for w, h in [(0, 480), (640, -1), (640.5, 480), (True, 480), (100_000, 480)]:
        with pytest.raises(DistortionError):
            Undistorter(w, h, K, PLUMB_BOB, "plumb_bob")
    with pytest.raises(GeometryError):
        Undistorter(640, 480, np.zeros((3, 3)), PLUMB_BOB, "plumb_bob")
    und = Undistorter(640, 480, K.ravel(), PLUMB_BOB, "plumb_bob")  # CameraInfo k: 9 numbers
    with pytest.raises(GeometryError, match="calibration is for 640x480"):
        und.depth(np.zeros((480, 641), np.uint16))
    with pytest.raises(GeometryError, match="calibration is for 640x480"):
        und.color(np.zeros((240, 320, 3), np.uint8))
    with pytest.raises(GeometryError, match="finite"):
        und.undistort_pixel(float("nan"), 3.0)
