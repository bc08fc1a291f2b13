"""Vectorised numpy ray-casting of procedural rooms into posed RGB-D views.

Written by hand because no installed library ray-casts analytic boxes/cylinders without
a GL context (open3d's raycaster needs meshes and is far slower to set up per scene).
Conventions: poses are camera-to-world 4×4 in the OpenCV optical frame (x right, y down,
z forward) in the scene's z-up world; pixel (u, v) = (column, row) casts its ray through
the integer pixel coordinate, matching the unprojection x = (u − cx)·d/fx used downstream,
so unprojecting a rendered depth lands exactly on the surface.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from llava3d_ros.synthetic.scenes import Box, Cylinder, Scene

FLOOR, WALL, CEILING = -1, -2, -3  # label-map codes for room surfaces; objects are 0..N-1
_EPS = 1e-6
_LIGHT = np.array([0.3, 0.5, 1.0]) / np.linalg.norm([0.3, 0.5, 1.0])


@dataclass
class RenderedViews:
    """Posed RGB-D views of one scene; depth 0 marks an invalid pixel."""

    rgb: np.ndarray  # (V, S, S, 3) uint8
    depth: np.ndarray  # (V, S, S) float32 metres (z along the optical axis)
    labels: np.ndarray  # (V, S, S) int16: object index, or FLOOR / WALL / CEILING
    intrinsics: np.ndarray  # (3, 3) float64, shared by all views
    cam_to_world: np.ndarray  # (V, 4, 4) float64


def intrinsics_for(resolution: int, hfov_deg: float) -> np.ndarray:
    """Pinhole K of a square image; the principal point is the centre in pixel-index units."""
    if resolution < 2 or not 10.0 <= hfov_deg <= 150.0:
        raise ValueError(f"bad camera: resolution={resolution}, hfov_deg={hfov_deg}")
    f = (resolution / 2) / np.tan(np.radians(hfov_deg) / 2)
    c = (resolution - 1) / 2
    return np.array([[f, 0.0, c], [0.0, f, c], [0.0, 0.0, 1.0]])


def look_at(eye: np.ndarray, target: np.ndarray) -> np.ndarray:
    """OpenCV-optical camera-to-world pose at ``eye`` looking at ``target`` (world z up)."""
    forward = np.asarray(target, float) - np.asarray(eye, float)
    norm = np.linalg.norm(forward)
    if norm < 1e-9:
        raise ValueError("eye and target coincide")
    forward /= norm
    right = np.cross(forward, [0.0, 0.0, 1.0])
    if np.linalg.norm(right) < 1e-6:
        raise ValueError("looking straight up or down: camera roll is undefined")
    right /= np.linalg.norm(right)
    down = np.cross(forward, right)
    pose = np.eye(4)
    pose[:3, :3] = np.stack([right, down, forward], axis=1)
    pose[:3, 3] = eye
    return pose


def orbit_trajectory(scene: Scene, n_views: int, rng: np.random.Generator) -> np.ndarray:
    """Cameras circling near the walls at head height, each aimed at one object in turn."""
    if n_views < 1:
        raise ValueError(f"n_views must be >= 1, got {n_views}")
    centers = scene.boxes[:, :3]
    order = rng.permutation(len(centers))
    theta0 = rng.uniform(0, 2 * np.pi)
    poses = []
    for i in range(n_views):
        theta = theta0 + 2 * np.pi * i / n_views + rng.uniform(-0.2, 0.2)
        radius = rng.uniform(0.7, 0.9)
        eye = np.array(
            [
                radius * (scene.width / 2 - 0.3) * np.cos(theta),
                radius * (scene.depth / 2 - 0.3) * np.sin(theta),
                rng.uniform(1.7, 2.1),  # above every object, so no camera starts inside one
            ]
        )
        # Blend the aimed object with the room centre so neighbours stay in view too.
        target = 0.75 * centers[order[i % len(order)]] + 0.25 * np.array([0.0, 0.0, 0.5])
        if np.linalg.norm(target[:2] - eye[:2]) < 0.3:
            target[:2] = 0.0
        poses.append(look_at(eye, target))
    return np.stack(poses)


def _primitive_arrays(scene: Scene) -> list[tuple[np.ndarray, np.ndarray, list]]:
    """Per object: its AABB (lo, hi) for culling and its primitives."""
    out = []
    for obj in scene.objects:
        box = obj.box
        out.append((box[:3] - box[3:] / 2, box[:3] + box[3:] / 2, obj.primitives))
    return out


def _slab(origin: np.ndarray, inv: np.ndarray, lo: np.ndarray, hi: np.ndarray):
    """Ray/AABB entry: (t_near, entry axis, hit mask) for rays starting outside the box.

    ``inv`` is (3, N): per-axis rows keep the reductions elementwise (much faster than
    reducing over a length-3 axis).
    """
    t1 = (lo - origin)[:, None] * inv
    t2 = (hi - origin)[:, None] * inv
    tn, tf = np.minimum(t1, t2), np.maximum(t1, t2)
    t_near = np.maximum(np.maximum(tn[0], tn[1]), tn[2])
    t_far = np.minimum(np.minimum(tf[0], tf[1]), tf[2])
    axis = np.where(tn[2] == t_near, 2, np.where(tn[1] == t_near, 1, 0))
    return t_near, axis, (t_near <= t_far) & (t_near > _EPS)


def _cylinder(origin: np.ndarray, dirs: np.ndarray, cyl: Cylinder):
    """Ray/vertical-cylinder first hit from outside: (t, normals), t = inf on a miss."""
    ox, oy = origin[0] - cyl.cx, origin[1] - cyl.cy
    dx, dy, dz = dirs[:, 0], dirs[:, 1], dirs[:, 2]
    a = dx * dx + dy * dy
    b = 2 * (ox * dx + oy * dy)
    c = ox * ox + oy * oy - cyl.radius**2
    disc = b * b - 4 * a * c
    with np.errstate(invalid="ignore", divide="ignore"):
        t_side = (-b - np.sqrt(disc)) / (2 * a)
        z_side = origin[2] + t_side * dz
        side_ok = (disc >= 0) & (t_side > _EPS) & (z_side >= cyl.z0) & (z_side <= cyl.z1)
        # Only the cap facing the camera can be the first hit.
        z_cap = cyl.z1 if origin[2] > cyl.z1 else cyl.z0
        t_cap = (z_cap - origin[2]) / dz
        px, py = ox + t_cap * dx, oy + t_cap * dy
    cap_ok = (t_cap > _EPS) & (px * px + py * py <= cyl.radius**2)
    t = np.where(side_ok, t_side, np.inf)
    use_cap = cap_ok & (t_cap < t)
    t = np.where(use_cap, t_cap, t)
    normals = np.zeros_like(dirs)
    with np.errstate(invalid="ignore"):  # misses (t = inf) are never read
        normals[:, 0] = (ox + t * dx) / cyl.radius
        normals[:, 1] = (oy + t * dy) / cyl.radius
    normals[use_cap] = [0.0, 0.0, 1.0 if z_cap == cyl.z1 else -1.0]
    return t, normals


def _cast_view(scene: Scene, objects, origin: np.ndarray, dirs: np.ndarray):
    """First hits of one view's rays: (t, labels, normals)."""
    n = len(dirs)
    safe = np.where(np.abs(dirs) < 1e-12, 1e-12, dirs)
    inv = np.ascontiguousarray((1.0 / safe).T)
    sign = np.sign(safe)
    rows = np.arange(n)
    # The camera is inside the room: the room surface is where the ray leaves its box.
    room_lo = np.array([-scene.width / 2, -scene.depth / 2, 0.0])
    room_hi = np.array([scene.width / 2, scene.depth / 2, scene.height])
    tf = np.maximum((room_lo - origin)[:, None] * inv, (room_hi - origin)[:, None] * inv).T
    axis = tf.argmin(axis=1)
    best = tf[rows, axis]
    normals = np.zeros((n, 3))
    normals[rows, axis] = -sign[rows, axis]
    labels = np.full(n, WALL, np.int16)
    labels[(axis == 2) & (dirs[:, 2] < 0)] = FLOOR
    labels[(axis == 2) & (dirs[:, 2] > 0)] = CEILING
    for index, (lo, hi, prims) in enumerate(objects):
        _, _, cull = _slab(origin, inv, lo, hi)
        idx = np.flatnonzero(cull)
        if idx.size == 0:
            continue
        d_sub, inv_sub, sign_sub = dirs[idx], inv[:, idx], sign[idx]
        for prim in prims:
            if isinstance(prim, Box):
                t, ax, hit = _slab(origin, inv_sub, prim.lo, prim.hi)
                hit &= t < best[idx]
                sel = idx[hit]
                normals[sel] = 0.0
                normals[sel, ax[hit]] = -sign_sub[hit, ax[hit]]
            else:
                t, nrm = _cylinder(origin, d_sub, prim)
                hit = t < best[idx]
                sel = idx[hit]
                normals[sel] = nrm[hit]
            best[sel] = t[hit]
            labels[sel] = index
    return best, labels, normals


def render_views(
    scene: Scene,
    cam_to_world: np.ndarray,
    intrinsics: np.ndarray,
    resolution: int,
    depth_noise: float = 0.0,
    hole_fraction: float = 0.0,
    rng: np.random.Generator | None = None,
) -> RenderedViews:
    """Ray-cast the given poses; optional relative depth noise and random depth holes."""
    if (depth_noise > 0 or hole_fraction > 0) and rng is None:
        raise ValueError("depth noise or holes need an rng (for determinism)")
    if not 0.0 <= hole_fraction < 1.0 or depth_noise < 0:
        raise ValueError(f"bad noise: depth_noise={depth_noise}, hole_fraction={hole_fraction}")
    cam_to_world = np.asarray(cam_to_world, float)
    if cam_to_world.ndim != 3 or cam_to_world.shape[1:] != (4, 4):
        raise ValueError(f"cam_to_world must be (V, 4, 4), got {cam_to_world.shape}")
    v, u = np.mgrid[0:resolution, 0:resolution]
    k = np.asarray(intrinsics, float)
    cam_dirs = np.stack(
        [(u - k[0, 2]) / k[0, 0], (v - k[1, 2]) / k[1, 1], np.ones_like(u, float)], axis=-1
    ).reshape(-1, 3)
    objects = _primitive_arrays(scene)
    base = np.concatenate(
        [[scene.floor_rgb, scene.wall_rgb, np.clip(scene.wall_rgb * 1.08, 0, 1)]]
        + [[o.rgb for o in scene.objects]]
    )
    n_views = len(cam_to_world)
    rgb = np.empty((n_views, resolution, resolution, 3), np.uint8)
    depth = np.empty((n_views, resolution, resolution), np.float32)
    labels = np.empty((n_views, resolution, resolution), np.int16)
    for i, pose in enumerate(cam_to_world):
        dirs = cam_dirs @ pose[:3, :3].T  # camera z = 1, so t is the optical-axis depth
        t, lab, nrm = _cast_view(scene, objects, pose[:3, 3], dirs)
        view_dir = dirs / np.linalg.norm(dirs, axis=1, keepdims=True)
        # Ambient + sun + headlight: every visible face keeps its hue at a readable level.
        shade = 0.35 + 0.4 * np.clip(nrm @ _LIGHT, 0, None) + 0.25 * np.abs((nrm * view_dir).sum(1))
        colour = base[np.where(lab < 0, -lab - 1, lab + 3)] * shade[:, None]
        rgb[i] = np.clip(colour * 255 + 0.5, 0, 255).astype(np.uint8).reshape(rgb.shape[1:])
        depth[i] = t.reshape(resolution, resolution)
        labels[i] = lab.reshape(resolution, resolution)
    if depth_noise > 0:
        depth *= (1 + depth_noise * rng.standard_normal(depth.shape)).astype(np.float32)
    if hole_fraction > 0:
        depth[rng.uniform(size=depth.shape) < hole_fraction] = 0.0
    return RenderedViews(rgb, depth, labels, k, cam_to_world)


def render_scene(
    scene: Scene,
    n_views: int = 8,
    resolution: int = 112,
    hfov_deg: float = 70.0,
    depth_noise: float = 0.0,
    hole_fraction: float = 0.0,
) -> RenderedViews:
    """Orbit trajectory + rendering of ``scene``; deterministic in the scene's seed."""
    poses = orbit_trajectory(scene, n_views, np.random.default_rng([scene.seed, 1]))
    k = intrinsics_for(resolution, hfov_deg)
    noise_rng = np.random.default_rng([scene.seed, 2])
    return render_views(scene, poses, k, resolution, depth_noise, hole_fraction, noise_rng)
