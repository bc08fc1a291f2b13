"""A ROS-free transform buffer with tf2's lookup semantics (plain numbers and numpy in, 4×4 out).

Written by hand because tf2_ros cannot be installed in this environment; on a full ROS install
the node uses tf2_ros behind the same small interface (``lookup``, ``can_transform``). Nothing
here imports rclpy or a ROS message type.

Semantics (tf2's, unless marked as a choice):

* The frames form a forest: each child has exactly one parent. Static edges are timeless;
  dynamic edges keep a stamp-sorted history trimmed to ``cache_s`` behind that edge's newest
  sample, and samples older than that window are dropped on arrival.
* ``lookup(target, source, stamp_ns)`` walks both frames up to their common ancestor and
  composes the edges at ``stamp_ns``: translations are interpolated linearly, rotations by
  slerp. ``stamp_ns == 0`` means the latest common time: the oldest of the newest stamps of
  the dynamic edges on the chain (0 again, i.e. "any", when the chain is all static).
* A lookup of a frame onto itself is the identity, even for a frame never seen (as tf2's
  ``lookupTransform``).
* Choice: ``extrapolation_tolerance_s`` (default 0.0, tf2 has none) lets a stamp up to that far
  past an edge's newest sample (or before its oldest) use that end sample unchanged.
* Choice: a repeated (parent, child, stamp) *replaces* the stored sample (tf2 drops it with a
  TF_REPEATED_DATA warning); the latest data wins.
* Choice: re-parenting a child (or turning a static edge dynamic or back) replaces the edge and
  drops its old history: the new parent wins. An edge that would close a loop is refused.
* ``clear()`` (after a time jump) empties every dynamic history but keeps the tree and the
  static edges; a lookup through an emptied edge fails with reason "extrapolation" (no data
  yet), like any lookup that has to wait for newer data. Without ``clear()`` a jump back in
  time by more than ``cache_s`` is dropped as too-old data, as in tf2.
"""

from __future__ import annotations

import bisect
import math
import operator
import threading
from dataclasses import dataclass, field

import numpy as np

__all__ = ["TransformBuffer", "TransformError"]

_Vec = tuple[float, float, float]
_Quat = tuple[float, float, float, float]  # x, y, z, w
_IDENTITY: tuple[_Quat, _Vec] = ((0.0, 0.0, 0.0, 1.0), (0.0, 0.0, 0.0))

REASONS = ("unknown_frame", "no_path", "too_old", "extrapolation")


class TransformError(Exception):
    """A lookup that cannot be answered; ``reason`` is one of ``REASONS``."""

    def __init__(self, reason: str, target: str, source: str, stamp_ns: int, detail: str) -> None:
        self.reason = reason
        self.target = target
        self.source = source
        self.stamp_ns = stamp_ns
        super().__init__(f"no transform from {source!r} to {target!r}: {detail}")


@dataclass
class _Edge:
    parent: str
    static: bool
    value: tuple[_Quat, _Vec] = _IDENTITY  # static edges only
    stamps: list[int] = field(default_factory=list)  # dynamic edges: sorted, unique
    samples: list[tuple[_Quat, _Vec]] = field(default_factory=list)


class TransformBuffer:
    """Stamped parent→child transforms, looked up as ``target_T_source`` at a time."""

    def __init__(self, cache_s: float = 10.0, extrapolation_tolerance_s: float = 0.0) -> None:
        """``cache_s``: history kept per dynamic edge; ``extrapolation_tolerance_s``: see module."""
        if not (math.isfinite(cache_s) and cache_s > 0):
            raise ValueError(f"cache_s must be finite and > 0, got {cache_s}")
        tol = extrapolation_tolerance_s
        if not (math.isfinite(tol) and tol >= 0):
            raise ValueError(f"extrapolation_tolerance_s must be finite and >= 0, got {tol}")
        self.cache_ns = int(round(cache_s * 1e9))
        self.tolerance_ns = int(round(tol * 1e9))
        self._edges: dict[str, _Edge] = {}  # child -> edge to its parent
        self._known: set[str] = set()
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ writing

    def set_transform(
        self,
        parent: str,
        child: str,
        stamp_ns: int,
        translation: np.ndarray,
        quaternion_xyzw: np.ndarray,
        static: bool = False,
    ) -> None:
        """Store ``parent_T_child`` at ``stamp_ns`` (ignored for static edges).

        Raises ValueError for empty or equal frame names, a negative or non-integer stamp,
        non-finite values, a zero quaternion, or an edge that would close a loop.
        """
        if not parent or not child:
            raise ValueError(f"frame names must be non-empty (parent={parent!r}, child={child!r})")
        if parent == child:
            raise ValueError(f"a frame cannot be its own parent: {child!r}")
        stamp_ns = operator.index(stamp_ns)
        if stamp_ns < 0:
            raise ValueError(f"stamp_ns must be >= 0, got {stamp_ns}")
        t = np.asarray(translation, dtype=np.float64).reshape(-1)
        q = np.asarray(quaternion_xyzw, dtype=np.float64).reshape(-1)
        if t.shape != (3,) or q.shape != (4,):
            raise ValueError(f"translation needs 3 and quaternion 4 values, got {t.size}, {q.size}")
        if not (np.isfinite(t).all() and np.isfinite(q).all()):
            raise ValueError(f"non-finite transform {parent!r}→{child!r}: t={t}, q={q}")
        norm = float(np.linalg.norm(q))
        if norm < 1e-9:
            raise ValueError(f"zero quaternion for {parent!r}→{child!r}")
        value = (tuple((q / norm).tolist()), tuple(t.tolist()))

        with self._lock:
            edge = self._edges.get(child)
            if edge is None or edge.parent != parent or edge.static != static:
                self._check_no_loop(parent, child)
                edge = _Edge(parent, static)
                self._edges[child] = edge
                self._known.update((parent, child))
            if static:
                edge.value = value
                return
            stamps = edge.stamps
            if stamps and stamp_ns < stamps[-1] - self.cache_ns:
                return  # older than the cache window (tf2: TF_OLD_DATA)
            i = bisect.bisect_left(stamps, stamp_ns)
            if i < len(stamps) and stamps[i] == stamp_ns:
                edge.samples[i] = value  # repeated stamp: replace
                return
            stamps.insert(i, stamp_ns)
            edge.samples.insert(i, value)
            k = bisect.bisect_left(stamps, stamps[-1] - self.cache_ns)
            if k:
                del stamps[:k], edge.samples[:k]

    def clear(self) -> None:
        """Forget all dynamic history (after a time jump); the tree and static edges stay."""
        with self._lock:
            for edge in self._edges.values():
                edge.stamps.clear()
                edge.samples.clear()

    # ------------------------------------------------------------------ reading

    def frames(self) -> dict[str, str]:
        """Every child frame mapped to its parent."""
        with self._lock:
            return {child: edge.parent for child, edge in self._edges.items()}

    def lookup(self, target: str, source: str, stamp_ns: int) -> np.ndarray:
        """``target_T_source`` (4×4 float64, maps points in ``source`` into ``target``).

        ``stamp_ns == 0``: at the latest common time. Raises TransformError.
        """
        stamp_ns = _check_stamp(stamp_ns)
        if target == source:
            return np.eye(4)
        with self._lock:
            up_s, up_t = self._chain(target, source, stamp_ns)
            if stamp_ns == 0:
                stamp_ns = self._latest_common(up_s + up_t, target, source)
            a_T_s = self._compose(up_s, target, source, stamp_ns)
            a_T_t = self._compose(up_t, target, source, stamp_ns)
        q, t = _mul(_inv(a_T_t), a_T_s)
        return _matrix(q, t)

    def latest_common_time(self, target: str, source: str) -> int:
        """The stamp a ``lookup(target, source, 0)`` uses (0 when the chain is all static)."""
        if target == source:
            return 0
        with self._lock:
            up_s, up_t = self._chain(target, source, 0)
            return self._latest_common(up_s + up_t, target, source)

    def can_transform(self, target: str, source: str, stamp_ns: int) -> tuple[bool, str]:
        """(True, "") when ``lookup`` would succeed, else (False, TransformError reason)."""
        try:
            self.lookup(target, source, stamp_ns)
        except TransformError as e:
            return False, e.reason
        return True, ""

    # ------------------------------------------------------------------ internals (locked)

    def _check_no_loop(self, parent: str, child: str) -> None:
        frame = parent
        while frame in self._edges:
            frame = self._edges[frame].parent
            if frame == child:
                raise ValueError(f"{parent!r}→{child!r} would close a loop ({child!r} is above)")

    def _chain(self, target: str, source: str, stamp_ns: int) -> tuple[list[str], list[str]]:
        """The child frames walked from ``source`` and from ``target`` up to their common
        ancestor (exclusive)."""
        for frame in (source, target):
            if frame not in self._known:
                raise TransformError(
                    "unknown_frame", target, source, stamp_ns, f"frame {frame!r} does not exist"
                )
        path_s = self._to_root(source)
        path_t = self._to_root(target)
        if path_s[-1] != path_t[-1]:
            raise TransformError(
                "no_path",
                target,
                source,
                stamp_ns,
                f"not connected ({source!r} is in the tree of {path_s[-1]!r}, "
                f"{target!r} in the tree of {path_t[-1]!r})",
            )
        on_t = {f: i for i, f in enumerate(path_t)}
        for i, frame in enumerate(path_s):
            if frame in on_t:
                return path_s[:i], path_t[: on_t[frame]]
        raise AssertionError("same root but no common ancestor")  # pragma: no cover

    def _to_root(self, frame: str) -> list[str]:
        path = [frame]
        edges = self._edges
        while frame in edges:
            frame = edges[frame].parent
            path.append(frame)
        return path

    def _latest_common(self, children: list[str], target: str, source: str) -> int:
        newest = None
        for child in children:
            edge = self._edges[child]
            if edge.static:
                continue
            if not edge.stamps:
                raise TransformError(
                    "extrapolation",
                    target,
                    source,
                    0,
                    f"no data for {edge.parent}→{child} yet (cleared or not received)",
                )
            if newest is None or edge.stamps[-1] < newest:
                newest = edge.stamps[-1]
        return 0 if newest is None else newest

    def _compose(
        self, children: list[str], target: str, source: str, stamp_ns: int
    ) -> tuple[_Quat, _Vec]:
        """ancestor_T_frame for the bottom frame of ``children`` (walked bottom-up)."""
        acc = _IDENTITY
        for child in children:
            acc = _mul(self._edge_at(child, target, source, stamp_ns), acc)
        return acc

    def _edge_at(self, child: str, target: str, source: str, stamp_ns: int) -> tuple[_Quat, _Vec]:
        edge = self._edges[child]
        if edge.static:
            return edge.value
        stamps = edge.stamps
        name = f"{edge.parent}→{child}"
        if not stamps:
            raise TransformError(
                "extrapolation",
                target,
                source,
                stamp_ns,
                f"no data for {name} yet (cleared or not received)",
            )
        i = bisect.bisect_left(stamps, stamp_ns)
        if i < len(stamps) and stamps[i] == stamp_ns:
            return edge.samples[i]
        if i == 0:
            if stamps[0] - stamp_ns <= self.tolerance_ns:
                return edge.samples[0]
            raise TransformError(
                "too_old",
                target,
                source,
                stamp_ns,
                f"extrapolation into the past: requested {_fmt(stamp_ns)} s, "
                f"oldest {name} is {_fmt(stamps[0])} s{self._tol_note()}",
            )
        if i == len(stamps):
            if stamp_ns - stamps[-1] <= self.tolerance_ns:
                return edge.samples[-1]
            raise TransformError(
                "extrapolation",
                target,
                source,
                stamp_ns,
                f"extrapolation into the future: requested {_fmt(stamp_ns)} s, "
                f"newest {name} is {_fmt(stamps[-1])} s{self._tol_note()}",
            )
        t0, t1 = stamps[i - 1], stamps[i]
        return _interpolate(edge.samples[i - 1], edge.samples[i], (stamp_ns - t0) / (t1 - t0))

    def _tol_note(self) -> str:
        return f" (tolerance {_fmt(self.tolerance_ns)} s)" if self.tolerance_ns else ""


# ---------------------------------------------------------------------- pure-float quaternion math
# Plain Python floats: for 3- and 4-vectors this is several times faster than numpy calls.


def _check_stamp(stamp_ns: int) -> int:
    stamp_ns = operator.index(stamp_ns)
    if stamp_ns < 0:
        raise ValueError(f"stamp_ns must be >= 0, got {stamp_ns}")
    return stamp_ns


def _fmt(ns: int) -> str:
    """Seconds with at least 3 decimals and no rounding away of the nanoseconds."""
    frac = f"{ns % 1_000_000_000:09d}".rstrip("0").ljust(3, "0")
    return f"{ns // 1_000_000_000}.{frac}"


def _rotate(q: _Quat, v: _Vec) -> _Vec:
    x, y, z, w = q
    vx, vy, vz = v
    # v + 2w(u×v) + 2u×(u×v), u = (x, y, z)
    cx = y * vz - z * vy
    cy = z * vx - x * vz
    cz = x * vy - y * vx
    return (
        vx + 2.0 * (w * cx + y * cz - z * cy),
        vy + 2.0 * (w * cy + z * cx - x * cz),
        vz + 2.0 * (w * cz + x * cy - y * cx),
    )


def _mul(a: tuple[_Quat, _Vec], b: tuple[_Quat, _Vec]) -> tuple[_Quat, _Vec]:
    """The rigid transform a ∘ b (apply b, then a)."""
    (ax, ay, az, aw), at = a
    (bx, by, bz, bw), bt = b
    q = (
        aw * bx + ax * bw + ay * bz - az * by,
        aw * by - ax * bz + ay * bw + az * bx,
        aw * bz + ax * by - ay * bx + az * bw,
        aw * bw - ax * bx - ay * by - az * bz,
    )
    rx, ry, rz = _rotate(a[0], bt)
    return q, (rx + at[0], ry + at[1], rz + at[2])


def _inv(a: tuple[_Quat, _Vec]) -> tuple[_Quat, _Vec]:
    (x, y, z, w), t = a
    qi = (-x, -y, -z, w)
    rx, ry, rz = _rotate(qi, t)
    return qi, (-rx, -ry, -rz)


def _interpolate(a: tuple[_Quat, _Vec], b: tuple[_Quat, _Vec], f: float) -> tuple[_Quat, _Vec]:
    """Lerp of the translations and slerp (shortest arc) of the rotations at fraction ``f``."""
    qa, ta = a
    qb, tb = b
    t = tuple(u + f * (v - u) for u, v in zip(ta, tb, strict=True))
    d = sum(u * v for u, v in zip(qa, qb, strict=True))
    if d < 0.0:
        qb = tuple(-v for v in qb)
        d = -d
    if d > 0.9995:  # nearly equal: normalised lerp avoids dividing by sin(θ) ≈ 0
        wa, wb = 1.0 - f, f
    else:
        theta = math.acos(d)
        s = math.sin(theta)
        wa, wb = math.sin((1.0 - f) * theta) / s, math.sin(f * theta) / s
    q = [wa * u + wb * v for u, v in zip(qa, qb, strict=True)]
    n = math.sqrt(sum(v * v for v in q))
    return (q[0] / n, q[1] / n, q[2] / n, q[3] / n), t  # type: ignore[return-value]


def _matrix(q: _Quat, t: _Vec) -> np.ndarray:
    x, y, z, w = q
    n = x * x + y * y + z * z + w * w
    s = 2.0 / n  # renormalises the accumulated product
    xx, yy, zz = s * x * x, s * y * y, s * z * z
    xy, xz, yz = s * x * y, s * x * z, s * y * z
    wx, wy, wz = s * w * x, s * w * y, s * w * z
    return np.array(
        [
            [1.0 - yy - zz, xy - wz, xz + wy, t[0]],
            [xy + wz, 1.0 - xx - zz, yz - wx, t[1]],
            [xz - wy, yz + wx, 1.0 - xx - yy, t[2]],
            [0.0, 0.0, 0.0, 1.0],
        ]
    )
