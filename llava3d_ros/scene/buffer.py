"""Bounded keyframe buffer: keyframe selection, eviction, view selection with current poses."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from llava3d_ros.geometry.align import (
    camera_tilt_deg,
    estimate_floor_alignment,
    given_alignment,
    grid_normals,
)
from llava3d_ros.geometry.boxes import project_points
from llava3d_ros.geometry.cameras import plan_resize_crop, resize_crop_intrinsics
from llava3d_ros.geometry.clicks import click_to_world
from llava3d_ros.geometry.depth import RESAMPLE_MODES, resize_crop_rgb
from llava3d_ros.geometry.errors import NoValidDepthError
from llava3d_ros.geometry.render import depth_points, render_depth
from llava3d_ros.geometry.unproject import (
    PatchPoints,
    as_pose,
    patch_points_robust,
    patch_points_upstream,
    patches_to_world,
)
from llava3d_ros.scene.frame import Frame
from llava3d_ros.scene.view import ModelView


class FrameOrderError(ValueError):
    """A frame arrived with a stamp not newer than the last one (out of order or duplicate)."""


class UnknownFrameError(KeyError):
    """A frame id or stamp that the buffer does not hold (never added, skipped, or evicted)."""


@dataclass
class Keyframe:
    """A frame prepared once at insertion: model-size image and camera-frame patch points."""

    frame: Frame
    image: np.ndarray  # (S, S, 3) uint8
    points: PatchPoints
    k_rgb_model: np.ndarray  # (3, 3) colour intrinsics at S×S

    @property
    def nbytes(self) -> int:
        return self.frame.nbytes + self.image.nbytes + self.points.cam_xyz.nbytes


@dataclass
class SceneViews:
    """What a query gets: views in the aligned world, the alignment, and provenance."""

    views: list[ModelView]
    alignment: np.ndarray  # (4, 4) world → aligned world
    stamps_ns: list[int] = field(default_factory=list)
    latest_stamp_ns: int = 0  # newest frame the buffer has received (kept or not)
    staleness_ns: int = 0  # latest received − newest used


def _has_finite(depth: np.ndarray) -> bool:
    """``np.isfinite(depth).any()`` for (h, w) depth, answered from the middle row if it can."""
    if depth.shape[0] and np.isfinite(depth[depth.shape[0] // 2]).any():
        return True
    return bool(np.isfinite(depth).any())


def _pose_distance(a: np.ndarray, b: np.ndarray, metres_per_rad: float) -> float:
    rel = a[:3, :3].T @ b[:3, :3]
    angle = float(np.arccos(np.clip((np.trace(rel) - 1) / 2, -1.0, 1.0)))
    return float(np.linalg.norm(a[:3, 3] - b[:3, 3])) + metres_per_rad * angle


class FrameBuffer:
    """Keeps the keyframes of a live stream within ``capacity`` frames and ``max_bytes``.

    A frame becomes a keyframe when it moved ≥ ``min_translation`` m or turned ≥
    ``min_rotation_deg`` from the last keyframe, or ``max_interval_s`` passed. Over a bound,
    the most redundant keyframe (closest in pose to another one; the newest is kept) is evicted
    and ``on_evict`` is called with its id, so a feature cache can drop it. ``mode`` is
    ``robust`` (median depth per patch) or ``upstream`` (top-left pixel, bit-exact).
    ``resample`` picks the colour resize: ``pillow`` (bit-identical to CLIP's preprocessing)
    or ``opencv`` (bilinear, ~5× faster, mean |Δ| ≈ 0.4 grey levels).
    """

    def __init__(
        self,
        capacity: int = 200,
        max_bytes: int = 512 * 2**20,
        image_size: int = 336,
        patch: int = 14,
        mode: str = "robust",
        min_translation: float = 0.10,
        min_rotation_deg: float = 10.0,
        max_interval_s: float = 5.0,
        compat_bf16: bool = False,
        alignment: np.ndarray | None = None,
        on_evict: Callable[[int], None] | None = None,
        resample: str = "pillow",
    ) -> None:
        if capacity < 1 or max_bytes < 1:
            raise ValueError(
                f"capacity and max_bytes must be positive, got {capacity}, {max_bytes}"
            )
        if mode not in ("robust", "upstream"):
            raise ValueError(f"mode must be 'robust' or 'upstream', got {mode!r}")
        if resample not in RESAMPLE_MODES:
            raise ValueError(f"resample must be one of {RESAMPLE_MODES}, got {resample!r}")
        self.resample = resample
        self.capacity, self.max_bytes = capacity, max_bytes
        self.image_size, self.patch, self.mode = image_size, patch, mode
        self._reorth = mode == "robust"  # upstream mode uses every pose exactly as given
        self.min_translation, self.min_rotation = min_translation, np.deg2rad(min_rotation_deg)
        self.max_interval_ns = int(max_interval_s * 1e9)
        self.compat_bf16 = compat_bf16
        self.alignment = np.eye(4) if alignment is None else given_alignment(alignment)
        # where self.alignment came from: "identity", "given" or "estimated"
        self.alignment_source = "identity" if alignment is None else "given"
        self.on_evict = on_evict
        self._frames: dict[int, Keyframe] = {}
        self._by_stamp: dict[tuple[str, int], int] = {}  # (camera frame, stamp) → id
        self._next_id = 0
        self._last_stamps: dict[str, int] = {}  # per camera: stamps are ordered per camera
        self._nbytes = 0

    def __len__(self) -> int:
        return len(self._frames)

    @property
    def nbytes(self) -> int:
        return self._nbytes

    def frame_ids(self) -> list[int]:
        """Ids of the keyframes held now, oldest first (a cache drops every other id)."""
        return list(self._frames)

    def keyframe(self, frame_id: int) -> Keyframe:
        if frame_id not in self._frames:
            raise UnknownFrameError(f"frame id {frame_id} is not in the buffer")
        return self._frames[frame_id]

    def _newest_of(self, camera: str) -> Frame | None:
        for kf in reversed(self._frames.values()):
            if kf.frame.camera_frame == camera:
                return kf.frame
        return None

    def _is_novel(self, stamp_ns: int, cam_to_world: np.ndarray, camera: str = "") -> bool:
        """Novel against the newest keyframe of the same camera (each camera judged alone)."""
        last = self._newest_of(camera)
        if last is None:
            return True
        if stamp_ns - last.stamp_ns >= self.max_interval_ns:
            return True
        # on Python floats: this runs for every incoming frame, numpy's per-call cost dominates
        a, b = last.cam_to_world[:3].tolist(), cam_to_world[:3].tolist()
        moved = math.dist([r[3] for r in a], [r[3] for r in b]) >= self.min_translation
        trace = sum(a[i][j] * b[i][j] for i in range(3) for j in range(3))  # trace(AᵀB)
        turned = math.acos(min(max((trace - 1) / 2, -1.0), 1.0)) >= self.min_rotation
        return moved or turned

    def prepare(self, frame: Frame) -> Keyframe:
        """Resize the colour image and compute camera-frame patch points (once per keyframe)."""
        rh, rw = frame.rgb.shape[:2]
        dh, dw = frame.depth.shape
        rgb_plan = plan_resize_crop(rw, rh, self.image_size)
        depth_plan = plan_resize_crop(dw, dh, self.image_size)
        if self.mode == "robust":
            points = patch_points_robust(frame.depth, frame.k_depth, depth_plan, self.patch)
        else:
            points = patch_points_upstream(
                frame.depth, frame.k_depth, depth_plan, self.patch, self.compat_bf16
            )
        if not points.valid.any():
            raise NoValidDepthError(
                f"frame at stamp {frame.stamp_ns} has no patch with valid depth"
            )
        image = resize_crop_rgb(frame.rgb, rgb_plan, self.resample)
        return Keyframe(frame, image, points, resize_crop_intrinsics(frame.k_rgb, rgb_plan))

    def _check_order(self, stamp_ns: int, camera: str = "") -> None:
        last = self._last_stamps.get(camera)
        if last is not None and stamp_ns <= last:
            kind = "duplicate" if stamp_ns == last else "out-of-order"
            of = f" of camera {camera!r}" if camera else ""
            raise FrameOrderError(f"{kind} frame stamp {stamp_ns} ns{of} (last was {last} ns)")

    def would_keep(self, stamp_ns: int, cam_to_world: np.ndarray, camera: str = "") -> bool:
        """Whether :meth:`add` would keep a frame with this stamp and pose, without its images.

        Lets a caller skip decoding images of frames that would be dropped anyway. Raises
        ``FrameOrderError`` like ``add`` and ``GeometryError`` for a broken pose.
        """
        self._check_order(stamp_ns, camera)
        pose = as_pose(cam_to_world, reorthonormalize=self._reorth)
        return self._is_novel(stamp_ns, pose, camera)

    def skip(self, stamp_ns: int, camera: str = "") -> None:
        """Record a frame received but not offered (not a keyframe: its images were not decoded).

        Keeps stamp ordering and staleness exactly as if ``add`` had dropped it.
        """
        self._check_order(stamp_ns, camera)
        self._last_stamps[camera] = stamp_ns

    def add(self, frame: Frame) -> int | None:
        """Offer a frame; returns its new id if kept as a keyframe, else None.

        Raises ``FrameOrderError`` for a stamp not newer than the previous frame's.
        """
        camera = frame.camera_frame
        self._check_order(frame.stamp_ns, camera)
        if not _has_finite(frame.depth):
            raise NoValidDepthError(f"frame at stamp {frame.stamp_ns} has no valid depth pixel")
        self._last_stamps[camera] = frame.stamp_ns
        if self._reorth:  # robust: nearest rotation; upstream keeps the pose as given (Frame does)
            frame.cam_to_world = as_pose(frame.cam_to_world)
        if not self._is_novel(frame.stamp_ns, frame.cam_to_world, camera):
            return None
        kf = self.prepare(frame)
        frame.frame_id = self._next_id
        self._next_id += 1
        self._frames[frame.frame_id] = kf
        self._by_stamp[(camera, frame.stamp_ns)] = frame.frame_id
        self._nbytes += kf.nbytes
        while len(self._frames) > 1 and (
            len(self._frames) > self.capacity or self._nbytes > self.max_bytes
        ):
            self._evict(self._most_redundant())
        return frame.frame_id

    def reset(self) -> int:
        """Drop every keyframe and the stamp order (time restarted); returns how many were held.

        Ids keep counting, so a feature cache keyed by id never confuses old and new frames.
        """
        dropped = list(self._frames)
        for fid in dropped:
            self._evict(fid)
        self._last_stamps.clear()
        return len(dropped)

    def restart_timeline(self) -> None:
        """Keep the keyframes but accept stamps from a new time line (older than the last one)."""
        self._last_stamps.clear()

    def _most_redundant(self) -> int:
        ids = list(self._frames)[:-1]  # never evict the newest keyframe
        if len(ids) == 1:
            return ids[0]
        poses = [self._frames[i].frame.cam_to_world for i in list(self._frames)]
        best, best_d = ids[0], np.inf
        for i, fid in enumerate(ids):
            d = min(_pose_distance(poses[i], poses[j], 0.5) for j in range(len(poses)) if j != i)
            if d < best_d:
                best, best_d = fid, d
        return best

    def _evict(self, frame_id: int) -> None:
        kf = self._frames.pop(frame_id)
        key = (kf.frame.camera_frame, kf.frame.stamp_ns)
        if self._by_stamp.get(key) == frame_id:  # a new time line may reuse stamps
            del self._by_stamp[key]
        self._nbytes -= kf.nbytes
        if self.on_evict is not None:
            self.on_evict(frame_id)

    def update_pose(self, stamp_ns: int, cam_to_world: np.ndarray, camera: str = "") -> bool:
        """Replace a keyframe's pose (a SLAM correction); True if a keyframe had that stamp.

        Only the pose changes: the keyframe's image, patch points and vision features stay
        valid (they live in the camera frame); the model's scene prefix is keyed by patch
        positions, so it is rebuilt only when a view that moved is asked for.
        """
        pose = as_pose(cam_to_world, reorthonormalize=self._reorth)
        fid = self._by_stamp.get((camera, int(stamp_ns)))
        if fid is None:
            return False
        self._frames[fid].frame.cam_to_world = pose
        return True

    def keyframe_at(self, stamp_ns: int, camera: str = "") -> int | None:
        """Id of the keyframe with this stamp (of ``camera``; "" = any camera), or None."""
        if camera:
            return self._by_stamp.get((camera, int(stamp_ns)))
        hits = [fid for (_, s), fid in self._by_stamp.items() if s == stamp_ns]
        return hits[0] if len(hits) == 1 else None

    def newest_keyframe(self, camera: str = "") -> int | None:
        """Id of the newest keyframe (of ``camera``; "" = any camera), or None."""
        for fid in reversed(self._frames):
            if not camera or self._frames[fid].frame.camera_frame == camera:
                return fid
        return None

    def nearest_stamps(self, stamp_ns: int, n: int = 3) -> list[int]:
        """The ``n`` keyframe stamps nearest ``stamp_ns`` (for error messages)."""
        stamps = [kf.frame.stamp_ns for kf in self._frames.values()]
        return sorted(stamps, key=lambda s: abs(s - stamp_ns))[:n]

    def render_depth(
        self, cam_to_world: np.ndarray, k: np.ndarray, size_wh: tuple[int, int]
    ) -> np.ndarray:
        """Depth the held keyframes saw, rendered into a camera at ``cam_to_world`` (world frame)."""
        clouds = (
            depth_points(kf.frame.depth, kf.frame.k_depth, kf.frame.cam_to_world)
            for kf in self._frames.values()
        )
        return render_depth(clouds, k, cam_to_world, size_wh)

    def set_alignment(self, matrix: np.ndarray) -> None:
        """Use a given world → aligned 4×4 (identity for z-up REP-103 worlds)."""
        self.alignment = given_alignment(matrix)
        self.alignment_source = "given"

    def clear_alignment(self) -> None:
        """Back to the identity (the world frame is taken as z-up as it is)."""
        self.alignment = np.eye(4)
        self.alignment_source = "identity"

    def camera_tilt_deg(self) -> float | None:
        """Angle between the keyframe cameras' mean up and world +z (None: no keyframes)."""
        if not self._frames:
            return None
        return camera_tilt_deg(np.stack([kf.frame.cam_to_world for kf in self._frames.values()]))

    def estimate_alignment(self) -> np.ndarray:
        """Estimate and set a floor alignment from all keyframes' patch points (see geometry.align)."""
        pts, normals, poses = [], [], []
        for kf in self._frames.values():
            world = patches_to_world(kf.points.cam_xyz, kf.frame.cam_to_world)
            pts.append(world[kf.points.valid])
            normals.append(grid_normals(world, kf.points.valid)[kf.points.valid])
            poses.append(kf.frame.cam_to_world)
        if not pts:
            raise NoValidDepthError("the buffer is empty: nothing to estimate an alignment from")
        self.alignment = estimate_floor_alignment(
            np.concatenate(pts), np.stack(poses), normals=np.concatenate(normals)
        )
        self.alignment_source = "estimated"
        return self.alignment

    def select(self, num_views: int, focus_points: np.ndarray | None = None) -> list[int]:
        """Ids of up to ``num_views`` keyframes covering the scene, in stamp order.

        Farthest-point sampling on camera poses (translation + 0.5 m per radian), starting from
        the newest keyframe; with ``focus_points`` (world, (P, 3)), keyframes that see them are
        taken first (most points in view, then newest).
        """
        if num_views < 1:
            raise ValueError(f"num_views must be >= 1, got {num_views}")
        ids = list(self._frames)
        if not ids:
            return []
        fp = None
        if focus_points is not None:
            fp = np.asarray(focus_points, dtype=np.float64).reshape(-1, 3)
        if num_views >= len(ids):
            # the sampling below would end up taking every keyframe, whatever the focus
            return sorted(ids)
        chosen: list[int] = []
        if fp is not None:
            seen = []
            for fid in ids:
                f = self._frames[fid].frame
                _, inside = project_points(
                    fp, f.k_rgb, f.cam_to_world, f.rgb.shape[1], f.rgb.shape[0]
                )
                if inside.any():
                    seen.append((int(inside.sum()), f.stamp_ns, fid))
            chosen = [fid for *_, fid in sorted(seen, reverse=True)[: max(num_views // 2, 1)]]
        if not chosen:
            chosen = [ids[-1]]
        poses = {fid: self._frames[fid].frame.cam_to_world for fid in ids}
        dist = {fid: min(_pose_distance(poses[fid], poses[c], 0.5) for c in chosen) for fid in ids}
        while len(chosen) < min(num_views, len(ids)):
            nxt = max((fid for fid in ids if fid not in chosen), key=lambda f: (dist[f], f))
            chosen.append(nxt)
            for fid in ids:
                dist[fid] = min(dist[fid], _pose_distance(poses[fid], poses[nxt], 0.5))
        return sorted(chosen)

    def views(self, num_views: int = 20, focus_points: np.ndarray | None = None) -> SceneViews:
        """Model-ready views with world patch positions from the CURRENT poses and alignment."""
        if not self._frames:
            raise NoValidDepthError("the buffer holds no keyframes yet")
        out = []
        for fid in self.select(num_views, focus_points):
            kf = self._frames[fid]
            pose = self.alignment @ kf.frame.cam_to_world
            xyz = patches_to_world(kf.points.cam_xyz, pose, self.compat_bf16)
            out.append(
                ModelView(
                    frame_id=fid,
                    stamp_ns=kf.frame.stamp_ns,
                    image=kf.image,
                    patch_xyz=xyz,
                    patch_valid=kf.points.pooled,
                    intrinsics=kf.k_rgb_model,
                    cam_to_world=pose,
                    camera_frame=kf.frame.camera_frame,
                )
            )
        stamps = [v.stamp_ns for v in out]
        latest = max(self._last_stamps.values(), default=0)
        return SceneViews(out, self.alignment.copy(), stamps, latest, latest - max(stamps))

    def click(self, frame_id: int, u: float, v: float, window: int = 7) -> np.ndarray:
        """Aligned-world point of colour pixel (u, v) (full resolution) in keyframe ``frame_id``.

        (u, v) is in the image the user saw: through the lens, when it distorts.
        """
        f = self.keyframe(frame_id).frame
        w, h = f.rgb.shape[1], f.rgb.shape[0]
        if (
            f.pixel_map is not None
            and np.isfinite(u)
            and np.isfinite(v)
            and 0 <= u < w
            and 0 <= v < h
        ):
            u, v = f.pixel_map(u, v)
        p = click_to_world(
            u,
            v,
            f.depth,
            f.k_depth,
            f.k_rgb,
            f.cam_to_world,
            (f.rgb.shape[1], f.rgb.shape[0]),
            window,
        )
        return (self.alignment[:3, :3] @ p + self.alignment[:3, 3]).astype(np.float64)

    def project(self, point: np.ndarray) -> dict[int, np.ndarray]:
        """Full-resolution colour pixel of an aligned-world point in every keyframe that sees it."""
        inv = np.linalg.inv(self.alignment)
        p = inv[:3, :3] @ np.asarray(point, dtype=np.float64).reshape(3) + inv[:3, 3]
        out = {}
        for fid, kf in self._frames.items():
            f = kf.frame
            uv, inside = project_points(
                p[None], f.k_rgb, f.cam_to_world, f.rgb.shape[1], f.rgb.shape[0]
            )
            if inside[0]:
                out[fid] = uv[0]
        return out
