"""Lens undistortion of colour and depth images, and of clicked pixels (ROS-free).

An :class:`Undistorter` is built from one camera_info's calibration: image size, K, D and
``distortion_model`` (``plumb_bob``: 5 coefficients k1 k2 p1 p2 k3; ``rational_polynomial``:
8, k1 k2 p1 p2 k3 k4 k5 k6; ``equidistant``: 4, the OpenCV fisheye model k1..k4).

The undistorted image keeps the same size and the same K — what image_proc's rectify node
gives when P = K and there is no rectification — so the node's resize + crop and the patch
unprojection see a pinhole camera with the intrinsics camera_info already holds. Pixels whose
source falls outside the distorted image become black (colour) or invalid (depth: 0 for
integer images, NaN for float ones).

Colour is resampled bilinearly; depth with the nearest neighbour, so every output depth is
one of the input depths and no depth is interpolated across an object's edge. The remap
tables are cached per calibration in a small LRU shared by all instances (the node builds an
Undistorter per message cheaply; the tables are built once per camera_info).

Clicks (PIXEL requests) are given in the distorted image the user saw: :meth:`undistort_pixel`
maps them into the undistorted image (OpenCV's iterative ``undistortPoints`` with P = K,
refined by Newton steps on the forward model), :meth:`distort_pixel` maps back.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from llava3d_ros.geometry.cameras import as_intrinsics
from llava3d_ros.geometry.errors import GeometryError

# distortion_model → number of coefficients in D
DISTORTION_MODELS: dict[str, int] = {
    "plumb_bob": 5,
    "rational_polynomial": 8,
    "equidistant": 4,
}
CACHE_SIZE = 4  # calibrations whose tables are kept (colour + depth camera, and a spare)
_MAX_SIDE = 16384


class DistortionError(GeometryError):
    """A calibration that cannot be used: unknown model, wrong coefficient count, bad D."""


@dataclass(frozen=True)
class _Maps:
    """Remap tables of one calibration: fixed-point for bilinear colour, flat indices for depth."""

    fixed_xy: np.ndarray  # (H, W, 2) int16, cv2.convertMaps CV_16SC2
    fixed_frac: np.ndarray  # (H, W) uint16 interpolation table index
    nearest: np.ndarray  # (H, W) intp: flat source index of the nearest pixel, −1 outside


_cache: OrderedDict[tuple, _Maps] = OrderedDict()
_cache_lock = threading.Lock()
_stats = {"hits": 0, "misses": 0}


def cache_info() -> dict[str, int]:
    """Remap-table cache counters: ``hits``, ``misses`` (= tables built) and ``size``."""
    with _cache_lock:
        return {**_stats, "size": len(_cache)}


def clear_cache() -> None:
    """Drop every cached table and reset the counters."""
    with _cache_lock:
        _cache.clear()
        _stats.update(hits=0, misses=0)


class Undistorter:
    """Undistorts images and clicks of one camera calibration (see the module docstring)."""

    def __init__(
        self,
        width: int,
        height: int,
        k: np.ndarray | Sequence[Sequence[float]] | Sequence[float],
        d: Sequence[float] | np.ndarray,
        distortion_model: str,
    ) -> None:
        if isinstance(width, bool) or isinstance(height, bool):
            raise DistortionError(f"image size must be integers, got {width!r}x{height!r}")
        try:
            w, h = int(width), int(height)
        except (TypeError, ValueError) as exc:
            raise DistortionError(f"image size must be integers, got {width!r}x{height!r}") from exc
        if w != width or h != height or not (0 < w <= _MAX_SIDE and 0 < h <= _MAX_SIDE):
            raise DistortionError(f"image size {width}x{height} is empty or implausible")
        kk = np.asarray(k, dtype=np.float64)
        self.k = as_intrinsics(kk.reshape(3, 3) if kk.size == 9 else kk)
        try:
            dd = np.asarray(d, dtype=np.float64).reshape(-1)
        except (TypeError, ValueError) as exc:
            raise DistortionError(f"distortion coefficients must be numbers, got {d!r}") from exc
        if not np.isfinite(dd).all():
            raise DistortionError(f"distortion coefficients hold non-finite values: {dd.tolist()}")
        self.width, self.height = w, h
        self.d = dd
        self.model = str(distortion_model)
        # all-zero (or empty) D: the image is pinhole already, whatever the model is named
        self.is_identity = not np.any(dd)
        if not self.is_identity:
            if self.model not in DISTORTION_MODELS:
                raise DistortionError(
                    f"unknown distortion model {self.model!r} "
                    f"(supported: {', '.join(DISTORTION_MODELS)})"
                )
            n = DISTORTION_MODELS[self.model]
            if dd.size != n:
                raise DistortionError(
                    f"{self.model} needs {n} distortion coefficients, got {dd.size}"
                )
        self.key = (w, h, tuple(self.k.ravel().tolist()), tuple(dd.tolist()), self.model)
        self._maps: _Maps | None = None

    @property
    def fisheye(self) -> bool:
        return self.model == "equidistant"

    # ------------------------------------------------------------------ images

    def maps(self) -> _Maps:
        """The remap tables of this calibration, from the shared LRU (built on first use)."""
        if self._maps is None:
            self._maps = _lookup(self.key, self._build_maps)
        return self._maps

    def color(self, img: np.ndarray) -> np.ndarray:
        """The undistorted colour (or any) image, bilinear; black where nothing was seen."""
        self._check_image(img)
        if self.is_identity:
            return img
        m = self.maps()
        return cv2.remap(
            img,
            m.fixed_xy,
            m.fixed_frac,
            interpolation=cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_CONSTANT,
            borderValue=0,
        )

    def depth(self, img: np.ndarray) -> np.ndarray:
        """The undistorted depth image, nearest neighbour; invalid (0 / NaN) where unseen."""
        self._check_image(img)
        if self.is_identity:
            return img
        idx = self.maps().nearest
        src = np.ascontiguousarray(img).reshape(self.height * self.width, *img.shape[2:])
        out = src[np.maximum(idx, 0)]  # (H, W, ...) gather; −1 fixed just below
        fill = np.nan if np.issubdtype(img.dtype, np.floating) else 0
        out[idx < 0] = fill
        return out

    def _check_image(self, img: np.ndarray) -> None:
        if not isinstance(img, np.ndarray) or img.ndim not in (2, 3):
            raise GeometryError(f"image must be a 2-D or 3-D numpy array, got {type(img)}")
        if img.shape[:2] != (self.height, self.width):
            raise GeometryError(
                f"image is {img.shape[1]}x{img.shape[0]}, the calibration is for "
                f"{self.width}x{self.height}"
            )

    def _build_maps(self) -> _Maps:
        size = (self.width, self.height)
        if self.fisheye:
            mx, my = cv2.fisheye.initUndistortRectifyMap(
                self.k, self.d, np.eye(3), self.k, size, cv2.CV_32FC1
            )
        else:
            mx, my = cv2.initUndistortRectifyMap(self.k, self.d, None, self.k, size, cv2.CV_32FC1)
        fixed_xy, fixed_frac = cv2.convertMaps(mx, my, cv2.CV_16SC2)
        ix = np.floor(mx.astype(np.float64) + 0.5)
        iy = np.floor(my.astype(np.float64) + 0.5)
        inside = (ix >= 0) & (ix < self.width) & (iy >= 0) & (iy < self.height)
        nearest = np.where(inside, iy * self.width + ix, -1).astype(np.intp)
        for a in (fixed_xy, fixed_frac, nearest):
            a.flags.writeable = False
        return _Maps(fixed_xy, fixed_frac, nearest)

    # ------------------------------------------------------------------ clicks

    def undistort_pixel(self, u: float, v: float) -> tuple[float, float]:
        """Where a pixel of the distorted image lies in the undistorted image (same K)."""
        out = self.undistort_pixels(np.array([[u, v]], dtype=np.float64))
        return float(out[0, 0]), float(out[0, 1])

    def distort_pixel(self, u: float, v: float) -> tuple[float, float]:
        """Where a pixel of the undistorted image lies in the distorted image."""
        out = self.distort_pixels(np.array([[u, v]], dtype=np.float64))
        return float(out[0, 0]), float(out[0, 1])

    def undistort_pixels(self, uv: np.ndarray) -> np.ndarray:
        """(N, 2) distorted pixel coordinates → (N, 2) undistorted ones (float64)."""
        uv = _points(uv)
        if self.is_identity or uv.shape[0] == 0:
            return uv.copy()
        pts = uv.reshape(-1, 1, 2)
        crit = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 100, 1e-12)
        if self.fisheye:
            try:
                est = cv2.fisheye.undistortPoints(
                    pts, self.k, self.d, R=np.eye(3), P=self.k, criteria=crit
                )
            except (TypeError, cv2.error):  # OpenCV < 4.6: no criteria argument
                est = cv2.fisheye.undistortPoints(pts, self.k, self.d, R=np.eye(3), P=self.k)
        elif hasattr(cv2, "undistortPointsIter"):  # OpenCV 4.x
            est = cv2.undistortPointsIter(pts, self.k, self.d, np.eye(3), self.k, crit)
        else:  # OpenCV 5: undistortPoints takes the criteria
            est = cv2.undistortPoints(pts, self.k, self.d, R=np.eye(3), P=self.k, criteria=crit)
        return self._refine(est.reshape(-1, 2).astype(np.float64), uv)

    def distort_pixels(self, uv: np.ndarray) -> np.ndarray:
        """(N, 2) undistorted pixel coordinates → (N, 2) distorted ones (the lens model)."""
        uv = _points(uv)
        if self.is_identity or uv.shape[0] == 0:
            return uv.copy()
        xy1 = np.linalg.solve(self.k, np.c_[uv, np.ones(len(uv))].T).T  # normalised, z = 1
        if self.fisheye:
            out = cv2.fisheye.distortPoints(xy1[:, None, :2].copy(), self.k, self.d)
        else:
            out, _ = cv2.projectPoints(xy1, np.zeros(3), np.zeros(3), self.k, self.d)
        return out.reshape(-1, 2).astype(np.float64)

    def _refine(self, est: np.ndarray, target: np.ndarray, steps: int = 4) -> np.ndarray:
        """Newton steps on distort(x) = target from OpenCV's estimate (finite-difference J)."""
        best = est.copy()
        resid = self.distort_pixels(best) - target
        err = np.hypot(resid[:, 0], resid[:, 1])
        h = 1e-3
        for _ in range(steps):
            todo = err > 1e-7
            if not todo.any():
                break
            x, r = best[todo], resid[todo]
            base = self.distort_pixels(x)
            jx = (self.distort_pixels(x + [h, 0.0]) - base) / h
            jy = (self.distort_pixels(x + [0.0, h]) - base) / h
            jac = np.stack([jx, jy], axis=2)  # (n, 2, 2): d(distorted)/d(u, v)
            det = jac[:, 0, 0] * jac[:, 1, 1] - jac[:, 0, 1] * jac[:, 1, 0]
            ok = np.abs(det) > 1e-12
            step = np.zeros_like(x)
            step[ok] = np.linalg.solve(jac[ok], r[ok][:, :, None])[:, :, 0]
            cand = x - step
            cand_r = self.distort_pixels(cand) - target[todo]
            cand_err = np.hypot(cand_r[:, 0], cand_r[:, 1])
            better = np.isfinite(cand_err) & (cand_err < err[todo])
            if not better.any():
                break
            rows = np.flatnonzero(todo)[better]
            best[rows], resid[rows], err[rows] = cand[better], cand_r[better], cand_err[better]
        return best


def _points(uv: np.ndarray) -> np.ndarray:
    pts = np.asarray(uv, dtype=np.float64).reshape(-1, 2)
    if not np.isfinite(pts).all():
        raise GeometryError(f"pixel coordinates must be finite, got {pts.tolist()}")
    return pts


def _lookup(key: tuple, build) -> _Maps:
    with _cache_lock:
        maps = _cache.get(key)
        if maps is not None:
            _cache.move_to_end(key)
            _stats["hits"] += 1
            return maps
    maps = build()  # outside the lock: a few ms; two threads may both build, one is kept
    with _cache_lock:
        kept = _cache.setdefault(key, maps)
        if kept is maps:
            _stats["misses"] += 1
        else:
            _stats["hits"] += 1
        _cache.move_to_end(key)
        while len(_cache) > CACHE_SIZE:
            _cache.popitem(last=False)
        return kept
