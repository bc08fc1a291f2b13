"""Deterministic procedural rooms: floor, walls and 3–7 furniture objects with GT boxes."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

# Hues 60° apart, fully saturated: the names stay recognisable under Lambert shading.
COLORS: dict[str, tuple[float, float, float]] = {
    "red": (0.85, 0.10, 0.10),
    "orange": (0.95, 0.50, 0.05),
    "yellow": (0.90, 0.85, 0.10),
    "green": (0.10, 0.70, 0.15),
    "blue": (0.10, 0.25, 0.90),
    "purple": (0.55, 0.15, 0.75),
}
CATEGORIES: tuple[str, ...] = ("table", "chair", "cabinet", "bed", "lamp", "sofa")
SIZES: tuple[str, ...] = ("small", "large")
ROOM_HEIGHT = 2.6
MIN_OBJECTS, MAX_OBJECTS = 3, 7


@dataclass(frozen=True)
class Box:
    """An axis-aligned solid box primitive (world frame, metres)."""

    lo: np.ndarray  # (3,)
    hi: np.ndarray  # (3,)


@dataclass(frozen=True)
class Cylinder:
    """A vertical solid cylinder primitive: axis (cx, cy), radius, z from z0 to z1."""

    cx: float
    cy: float
    radius: float
    z0: float
    z1: float


Primitive = Box | Cylinder


@dataclass
class SceneObject:
    """One piece of furniture: its names, colour, primitives and ground-truth box."""

    category: str
    color: str
    size: str
    primitives: list[Primitive]
    box: np.ndarray = field(init=False)  # (6,) [cx, cy, cz, dx, dy, dz]

    def __post_init__(self) -> None:
        lo, hi = primitive_bounds(self.primitives)
        self.box = np.concatenate([(lo + hi) / 2, hi - lo])

    @property
    def rgb(self) -> np.ndarray:
        return np.asarray(COLORS[self.color])

    @property
    def name(self) -> str:
        return f"{self.color} {self.category}"


@dataclass
class Scene:
    """A room [-W/2, W/2] × [-D/2, D/2] × [0, H] (z up, floor centre at the origin)."""

    seed: int
    width: float
    depth: float
    height: float
    floor_rgb: np.ndarray
    wall_rgb: np.ndarray
    objects: list[SceneObject]

    @property
    def boxes(self) -> np.ndarray:
        """(N, 6) ground-truth axis-aligned boxes [cx, cy, cz, dx, dy, dz]."""
        return np.stack([o.box for o in self.objects])

    @property
    def labels(self) -> list[str]:
        return [o.category for o in self.objects]


def primitive_bounds(primitives: list[Primitive]) -> tuple[np.ndarray, np.ndarray]:
    """Axis-aligned bounds (lo, hi) of a union of primitives."""
    los, his = [], []
    for p in primitives:
        if isinstance(p, Box):
            los.append(p.lo)
            his.append(p.hi)
        else:
            los.append(np.array([p.cx - p.radius, p.cy - p.radius, p.z0]))
            his.append(np.array([p.cx + p.radius, p.cy + p.radius, p.z1]))
    return np.min(los, axis=0), np.max(his, axis=0)


def _box(x0: float, y0: float, z0: float, x1: float, y1: float, z1: float) -> Box:
    return Box(np.array([x0, y0, z0], float), np.array([x1, y1, z1], float))


def _lerp(lo: float, hi: float, u: float) -> float:
    return lo + (hi - lo) * u


def _legs(sx: float, sy: float, h: float, t: float) -> list[Box]:
    """Four square legs of side t under a sx × sy top, in a footprint centred at the origin."""
    xs, ys = (-sx / 2, sx / 2 - t), (-sy / 2, sy / 2 - t)
    return [_box(x, y, 0, x + t, y + t, h) for x in xs for y in ys]


def _shape(category: str, u: float, rng: np.random.Generator) -> list[Primitive]:
    """Primitives of one object centred on the origin footprint, 'front' facing −y."""
    if category == "table":
        sx, sy, h = _lerp(0.8, 1.6, u), _lerp(0.6, 1.0, u), rng.uniform(0.68, 0.8)
        return [_box(-sx / 2, -sy / 2, h - 0.05, sx / 2, sy / 2, h), *_legs(sx, sy, h - 0.05, 0.07)]
    if category == "chair":
        s, seat = _lerp(0.42, 0.6, u), rng.uniform(0.42, 0.5)
        back = seat + _lerp(0.4, 0.55, u)
        return [
            _box(-s / 2, -s / 2, seat - 0.06, s / 2, s / 2, seat),
            _box(-s / 2, s / 2 - 0.07, seat, s / 2, s / 2, back),
            *_legs(s, s, seat - 0.06, 0.05),
        ]
    if category == "cabinet":
        sx, sy, h = _lerp(0.5, 1.0, u), rng.uniform(0.4, 0.6), _lerp(0.8, 1.5, u)
        return [_box(-sx / 2, -sy / 2, 0, sx / 2, sy / 2, h)]
    if category == "bed":
        sx, sy = _lerp(1.0, 1.8, u), rng.uniform(1.9, 2.1)
        base, head = rng.uniform(0.4, 0.55), rng.uniform(0.9, 1.1)
        return [
            _box(-sx / 2, -sy / 2, 0, sx / 2, sy / 2 - 0.08, base),
            _box(-sx / 2, sy / 2 - 0.08, 0, sx / 2, sy / 2, head),
        ]
    if category == "lamp":
        h, r = _lerp(1.1, 1.6, u), _lerp(0.15, 0.25, u)
        return [
            Cylinder(0.0, 0.0, r * 0.8, 0.0, 0.05),
            Cylinder(0.0, 0.0, 0.035, 0.05, h - 0.3),
            Cylinder(0.0, 0.0, r, h - 0.3, h),
        ]
    if category == "sofa":
        sx, sy = _lerp(1.4, 2.2, u), rng.uniform(0.8, 0.95)
        seat, back, arm = rng.uniform(0.4, 0.48), rng.uniform(0.8, 0.95), 0.18
        return [
            _box(-sx / 2 + arm, -sy / 2, 0, sx / 2 - arm, sy / 2 - 0.2, seat),
            _box(-sx / 2, sy / 2 - 0.2, 0, sx / 2, sy / 2, back),
            _box(-sx / 2, -sy / 2, 0, -sx / 2 + arm, sy / 2 - 0.2, seat + 0.2),
            _box(sx / 2 - arm, -sy / 2, 0, sx / 2, sy / 2 - 0.2, seat + 0.2),
        ]
    raise ValueError(f"unknown category {category!r}; known: {CATEGORIES}")


def _place(prims: list[Primitive], quarter_turns: int, x: float, y: float) -> list[Primitive]:
    """Rotate by a multiple of 90° about z (so boxes stay axis-aligned), then translate."""
    c, s = [(1, 0), (0, 1), (-1, 0), (0, -1)][quarter_turns % 4]

    def tf(px: float, py: float) -> tuple[float, float]:
        return c * px - s * py + x, s * px + c * py + y

    out: list[Primitive] = []
    for p in prims:
        if isinstance(p, Box):
            a, b = tf(p.lo[0], p.lo[1]), tf(p.hi[0], p.hi[1])
            lo = [min(a[0], b[0]), min(a[1], b[1]), p.lo[2]]
            hi = [max(a[0], b[0]), max(a[1], b[1]), p.hi[2]]
            out.append(Box(np.array(lo), np.array(hi)))
        else:
            cx, cy = tf(p.cx, p.cy)
            out.append(Cylinder(cx, cy, p.radius, p.z0, p.z1))
    return out


def make_scene(seed: int, n_objects: int | None = None) -> Scene:
    """Build the room of ``seed``: same seed, same scene (objects never overlap)."""
    if n_objects is not None and not MIN_OBJECTS <= n_objects <= MAX_OBJECTS:
        raise ValueError(f"n_objects must be in [{MIN_OBJECTS}, {MAX_OBJECTS}], got {n_objects}")
    rng = np.random.default_rng([int(seed), 0])
    width, depth = rng.uniform(4.5, 7.0), rng.uniform(4.5, 7.0)
    floor_rgb = rng.uniform(0.45, 0.6) * np.ones(3) + rng.uniform(-0.03, 0.03, 3)
    wall_rgb = rng.uniform(0.75, 0.88) * np.ones(3) + rng.uniform(-0.03, 0.03, 3)
    want = int(rng.integers(MIN_OBJECTS, MAX_OBJECTS + 1)) if n_objects is None else n_objects
    objects: list[SceneObject] = []
    footprints: list[tuple[np.ndarray, np.ndarray]] = []
    gap, wall_gap = 0.25, 0.1
    # Rejection sampling of footprints; a full room just ends with fewer objects, but
    # never fewer than MIN_OBJECTS (the attempt budget is far above what 7 objects need).
    for _ in range(400):
        if len(objects) == want:
            break
        category = CATEGORIES[int(rng.integers(len(CATEGORIES)))]
        color = list(COLORS)[int(rng.integers(len(COLORS)))]
        u = float(rng.uniform())
        prims = _shape(category, u, rng)
        lo, hi = primitive_bounds(prims)
        turns = int(rng.integers(4))
        half = (hi[:2] - lo[:2]) / 2 if turns % 2 == 0 else (hi[1::-1] - lo[1::-1]) / 2
        room_half = np.array([width, depth]) / 2 - wall_gap - half
        if np.any(room_half <= 0):
            continue
        xy = rng.uniform(-room_half, room_half)
        flo, fhi = xy - half, xy + half
        if any(np.all(flo < b + gap) and np.all(a - gap < fhi) for a, b in footprints):
            continue
        footprints.append((flo, fhi))
        placed = _place(prims, turns, float(xy[0]), float(xy[1]))
        objects.append(SceneObject(category, color, SIZES[int(u >= 0.5)], placed))
    if len(objects) < MIN_OBJECTS:
        raise RuntimeError(f"seed {seed}: placed only {len(objects)} objects")
    return Scene(int(seed), width, depth, ROOM_HEIGHT, floor_rgb, wall_rgb, objects)


def recolored(scene: Scene, rng: np.random.Generator) -> Scene:
    """The same room and furniture with distinct colours drawn anew (position-binding probes)."""
    if len(scene.objects) > len(COLORS):
        raise ValueError(f"{len(scene.objects)} objects but only {len(COLORS)} distinct colours")
    names = list(COLORS)
    picks = rng.permutation(len(names))[: len(scene.objects)]
    objects = [
        SceneObject(o.category, names[int(k)], o.size, o.primitives)
        for o, k in zip(scene.objects, picks, strict=True)
    ]
    return replace(scene, objects=objects)
