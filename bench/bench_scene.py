"""Scene-core throughput: RGB-D frame → model-ready view, and 20 views + voxel pooling.

Each is compared, in the same run, with a direct numpy transcription of upstream's path
(depth resized to 336, every pixel unprojected with a 4×4 homogeneous product, then the
top-left pixel of each patch kept, colour through Pillow bicubic as CLIP's processor does).
One core (torch, OpenCV and numpy's BLAS limited to one thread). Each time is the best of 5 blocks of ≥ 0.3 s
(the machine may be shared; the best block is the least disturbed), baseline timed the same
way. Uses the 7-Scenes frames in ../shared/data when present, else a synthetic 640×480 frame.
"""

from __future__ import annotations

import os

# one core for every library, numpy's OpenBLAS included (the baseline's 4×4 products use it);
# set before numpy is imported, which reads them once
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import time  # noqa: E402
from pathlib import Path  # noqa: E402

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from llava3d_ros.geometry.voxels import pool_features, voxelize  # noqa: E402
from llava3d_ros.scene.buffer import FrameBuffer  # noqa: E402
from llava3d_ros.scene.frame import Frame  # noqa: E402

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "7scenes-redkitchen"


def load_inputs() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, str]:
    if DATA.exists():
        rgb = np.asarray(Image.open(DATA / "frame-000150.color.png").convert("RGB"))
        depth = np.asarray(Image.open(DATA / "frame-000150.depth.png"))
        return (
            rgb,
            depth,
            np.loadtxt(DATA / "frame-000150.pose.txt"),
            np.loadtxt(DATA / "camera-intrinsics.txt"),
            "7-Scenes frame 150",
        )
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 255, (480, 640, 3), dtype=np.uint8)
    depth = rng.integers(500, 4000, (480, 640)).astype(np.uint16)
    k = np.array([[585.0, 0, 320], [0, 585.0, 240], [0, 0, 1]])
    return rgb, depth, np.eye(4), k, "synthetic 640x480"


def upstream_numpy_view(rgb: np.ndarray, depth: np.ndarray, pose: np.ndarray, k: np.ndarray):
    """Upstream's path transcribed to numpy: PIL nearest resize + crop, full-map unprojection."""
    h, w = depth.shape
    s = 336 / min(w, h)
    nw, nh = int(w * s), int(h * s)
    img = Image.fromarray(depth).resize((nw, nh), Image.NEAREST)
    img = img.crop(((nw - 336) / 2, (nh - 336) / 2, (nw + 336) / 2, (nh + 336) / 2))
    d = np.asarray(img).astype(np.float32) / 1000.0
    k4 = np.eye(4)
    k4[:3, :3] = k
    k4[0] /= w / nw
    k4[1] /= h / nh
    k4[0, 2] -= (nw - nh) / 2
    v, u = np.meshgrid(np.arange(336), np.arange(336), indexing="ij")
    x = (u - k4[0, 2]) * d / k4[0, 0]
    y = (v - k4[1, 2]) * d / k4[1, 1]
    cam = np.stack([x, y, d, np.ones_like(d)], -1).reshape(-1, 4)
    world = cam @ pose.T
    world = (world[:, :3] / world[:, 3:]).reshape(336, 336, 3)
    ch, cw = rgb.shape[:2]
    cs = 336 / min(cw, ch)
    cnw, cnh = int(cw * cs), int(ch * cs)
    image = Image.fromarray(rgb).resize((cnw, cnh), Image.BICUBIC)
    left, top = (cnw - 336) // 2, (cnh - 336) // 2
    image = np.asarray(image.crop((left, top, left + 336, top + 336)))
    return image, world[::14, ::14].astype(np.float32)


def timeit(fn, block: float = 0.3, repeats: int = 5) -> float:
    """Seconds per call: the best of ``repeats`` blocks of at least ``block`` seconds."""
    fn()
    best = np.inf
    for _ in range(repeats):
        n, t0 = 0, time.perf_counter()
        while (elapsed := time.perf_counter() - t0) < block:
            fn()
            n += 1
        best = min(best, elapsed / n)
    return best


def main() -> None:
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    rgb, depth, pose, k, source = load_inputs()
    rows = []

    def ours_frame(resample: str) -> None:
        buf = FrameBuffer(resample=resample)
        buf.add(Frame.from_raw(rgb, depth, k, pose, 1))
        buf.views(1)

    t_ref = timeit(lambda: upstream_numpy_view(rgb, depth, pose, k))
    for resample in ("opencv", "pillow"):
        name = f"frame -> view ({resample})"
        rows.append((name, timeit(lambda r=resample: ours_frame(r)), t_ref))

    # 20 keyframes at distinct poses; features as the model would pool them (576 × 1024 each)
    buf = FrameBuffer(min_translation=0.0, min_rotation_deg=0.0, capacity=20)
    poses = []
    for i in range(20):
        p = pose.copy()
        p[:3, 3] += [0.05 * i, 0.0, 0.02 * i]
        poses.append(p)
        buf.add(Frame.from_raw(rgb, depth, k, p, i + 1))
    feats = torch.randn(20 * 576, 1024)

    def ours_scene() -> None:
        views = buf.views(20).views
        xyz = torch.from_numpy(np.stack([v.patch_xyz for v in views]).reshape(-1, 3))
        valid = torch.from_numpy(np.stack([v.patch_valid for v in views]).reshape(-1))
        pool_features(feats, voxelize(xyz, valid))

    def ref_scene() -> None:
        xyz = np.stack([upstream_numpy_view(rgb, depth, p, k)[1] for p in poses]).reshape(-1, 3)
        pool_features(feats, voxelize(torch.from_numpy(xyz)))

    rows.append(("20 views + voxel pool", timeit(ours_scene), timeit(ref_scene)))
    print(
        f"source: {source}; torch threads: {torch.get_num_threads()}, OpenCV threads: "
        f"{cv2.getNumThreads()}; fp32; mode: robust; colour resize in parentheses "
        "(pillow = bit-identical to CLIP's preprocessing, opencv = bilinear)"
    )
    print(f"{'case':<28}{'ours ms':>10}{'ours /s':>10}{'upstream-np ms':>16}{'speed-up':>10}")
    for name, a, b in rows:
        print(f"{name:<28}{a * 1e3:>10.2f}{1 / a:>10.1f}{b * 1e3:>16.2f}{b / a:>9.1f}x")


if __name__ == "__main__":
    main()
