"""Scenes → scene-core model views + questions, generated in parallel and stored as one .npz."""

from __future__ import annotations

import json
import multiprocessing
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from llava3d_ros.scene.buffer import FrameBuffer
from llava3d_ros.scene.frame import Frame
from llava3d_ros.scene.view import ModelView
from llava3d_ros.synthetic.render import RenderedViews, render_scene
from llava3d_ros.synthetic.scenes import Scene, make_scene
from llava3d_ros.synthetic.tasks import TASK_KINDS, Task, make_tasks, visible_pixels

CLICK_MODES = ("inside", "surface")


@dataclass(frozen=True)
class DataConfig:
    """How scenes are rendered and cut into patches (``resolution`` = the tower's image_size)."""

    n_views: int = 8
    resolution: int = 112
    patch: int = 8
    hfov_deg: float = 70.0
    depth_noise: float = 0.0
    hole_fraction: float = 0.0
    kinds: tuple[str, ...] = TASK_KINDS
    clicks: str = "inside"  # click points: "inside" the object or on its seen "surface"

    def __post_init__(self) -> None:
        if self.clicks not in CLICK_MODES:
            raise ValueError(f"clicks must be one of {CLICK_MODES}, got {self.clicks!r}")


@dataclass
class SceneSample:
    """One scene as the model sees it (stacked ModelView arrays) plus its questions and GT."""

    seed: int
    images: np.ndarray  # (V, S, S, 3) uint8
    patch_xyz: np.ndarray  # (V, G, G, 3) float32, world frame
    patch_valid: np.ndarray  # (V, G, G) bool
    tasks: list[Task]
    boxes: np.ndarray  # (N, 6) ground truth
    names: list[str] = field(default_factory=list)  # "colour category" per object
    intrinsics: np.ndarray = field(default_factory=lambda: np.eye(3))  # (3, 3) at S×S
    cam_to_world: np.ndarray = field(default_factory=lambda: np.zeros((0, 4, 4)))  # (V, 4, 4)

    def model_views(self) -> list[ModelView]:
        """The stored views as the scene core hands them to the model."""
        return [
            ModelView(
                frame_id=i,
                stamp_ns=i + 1,
                image=self.images[i],
                patch_xyz=self.patch_xyz[i],
                patch_valid=self.patch_valid[i],
                intrinsics=self.intrinsics,
                cam_to_world=self.cam_to_world[i],
            )
            for i in range(len(self.images))
        ]


def scene_views(views: RenderedViews, image_size: int, patch: int) -> list[ModelView]:
    """Rendered views through the scene core (resize/crop, per-patch world xyz), as at run time."""
    buffer = FrameBuffer(
        capacity=len(views.rgb), image_size=image_size, patch=patch, min_translation=0.0
    )
    for i in range(len(views.rgb)):
        frame = Frame.from_raw(
            views.rgb[i], views.depth[i], views.intrinsics, views.cam_to_world[i], i + 1
        )
        buffer.add(frame)
    return buffer.views(len(views.rgb)).views


def make_sample(seed: int, cfg: DataConfig) -> SceneSample:
    """Render scene ``seed``, prepare its views with the scene core and write its questions."""
    return sample_from_scene(make_scene(seed), cfg, seed)


def sample_from_scene(scene: Scene, cfg: DataConfig, task_seed: int) -> SceneSample:
    """Like :func:`make_sample` for a given scene; ``task_seed`` seeds its click points."""
    seed = task_seed
    rendered = render_scene(
        scene, cfg.n_views, cfg.resolution, cfg.hfov_deg, cfg.depth_noise, cfg.hole_fraction
    )
    views = scene_views(rendered, cfg.resolution, cfg.patch)
    visible = visible_pixels(rendered, len(scene.objects))
    surface = rendered if cfg.clicks == "surface" else None
    tasks = make_tasks(scene, np.random.default_rng([seed, 3]), cfg.kinds, visible, surface=surface)
    return SceneSample(
        seed=seed,
        images=np.stack([v.image for v in views]),
        patch_xyz=np.stack([v.patch_xyz for v in views]).astype(np.float32),
        patch_valid=np.stack([v.patch_valid for v in views]),
        tasks=tasks,
        boxes=scene.boxes,
        names=[o.name for o in scene.objects],
        intrinsics=views[0].intrinsics,
        cam_to_world=np.stack([v.cam_to_world for v in views]),
    )


def _make(args: tuple[int, DataConfig]) -> SceneSample:
    return make_sample(*args)


def generate(seeds: list[int], cfg: DataConfig, workers: int = 1) -> list[SceneSample]:
    """Samples for ``seeds`` in order; ``workers`` > 1 renders in a process pool."""
    jobs = [(int(s), cfg) for s in seeds]
    if workers <= 1:
        return [_make(j) for j in jobs]
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        return pool.map(_make, jobs, chunksize=16)


def _task_dict(t: Task) -> dict:
    return {
        "kind": t.kind,
        "question": t.question,
        "answer": t.answer,
        "clicks": t.clicks.tolist(),
        "target": t.target,
        "box": None if t.box is None else t.box.tolist(),
    }


def _task_from(d: dict) -> Task:
    box = None if d["box"] is None else np.asarray(d["box"], float)
    clicks = np.asarray(d["clicks"], np.float32).reshape(-1, 3)
    return Task(d["kind"], d["question"], d["answer"], clicks, d["target"], box)


def save_npz(path: str | Path, samples: list[SceneSample], cfg: DataConfig) -> None:
    """One compressed file: stacked arrays + JSON for questions (flat shading compresses well)."""
    if not samples:
        raise ValueError("no samples to save")
    meta = {
        "config": asdict(cfg),
        "seeds": [s.seed for s in samples],
        "tasks": [[_task_dict(t) for t in s.tasks] for s in samples],
        "boxes": [s.boxes.tolist() for s in samples],
        "names": [s.names for s in samples],
    }
    np.savez_compressed(
        path,
        images=np.stack([s.images for s in samples]),
        patch_xyz=np.stack([s.patch_xyz for s in samples]).astype(np.float16),
        patch_valid=np.stack([s.patch_valid for s in samples]),
        intrinsics=np.stack([s.intrinsics for s in samples]),
        cam_to_world=np.stack([s.cam_to_world for s in samples]),
        meta=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8),
    )


def load_npz(path: str | Path) -> tuple[DataConfig, list[SceneSample]]:
    """Read a file written by :func:`save_npz` (plain arrays only: no pickle)."""
    with np.load(path, allow_pickle=False) as data:
        meta = json.loads(data["meta"].tobytes().decode())
        images, xyz, valid = data["images"], data["patch_xyz"], data["patch_valid"]
        ks, poses = data["intrinsics"], data["cam_to_world"]
    raw = meta["config"]
    cfg = DataConfig(**{**raw, "kinds": tuple(raw["kinds"])})
    samples = [
        SceneSample(
            seed=seed,
            images=images[i],
            patch_xyz=xyz[i].astype(np.float32),
            patch_valid=valid[i],
            tasks=[_task_from(d) for d in meta["tasks"][i]],
            boxes=np.asarray(meta["boxes"][i], float),
            names=meta["names"][i],
            intrinsics=ks[i],
            cam_to_world=poses[i],
        )
        for i, seed in enumerate(meta["seeds"])
    ]
    return cfg, samples


def parse_seeds(text: str) -> list[int]:
    """``"A-B"`` (inclusive range of non-negative seeds) or a comma list of them → seeds."""
    seeds: list[int] = []
    for part in (p.strip() for p in text.split(",")):
        match = re.fullmatch(r"(\d+)(?:-(\d+))?", part)
        if match is None:
            raise ValueError(f"bad seed spec {part!r} in {text!r} (want A-B or A,B,C)")
        lo = int(match.group(1))
        hi = int(match.group(2)) if match.group(2) else lo
        if hi < lo:
            raise ValueError(f"empty seed range {part!r}")
        seeds.extend(range(lo, hi + 1))
    return seeds


def main(argv: list[str] | None = None) -> None:
    """``python -m llava3d_ros.synthetic.dataset --seeds 0-1999 --out train.npz``."""
    import argparse
    import time

    p = argparse.ArgumentParser(description="Pre-generate synthetic scenes to a .npz")
    p.add_argument("--seeds", required=True, help="A-B or A,B,C")
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--views", type=int, default=DataConfig.n_views)
    p.add_argument("--resolution", type=int, default=DataConfig.resolution)
    p.add_argument("--patch", type=int, default=DataConfig.patch)
    p.add_argument("--depth-noise", type=float, default=0.0)
    p.add_argument("--hole-fraction", type=float, default=0.0)
    a = p.parse_args(argv)
    cfg = DataConfig(
        a.views, a.resolution, a.patch, depth_noise=a.depth_noise, hole_fraction=a.hole_fraction
    )
    start = time.perf_counter()
    samples = generate(parse_seeds(a.seeds), cfg, a.workers)
    save_npz(a.out, samples, cfg)
    n_q = sum(len(s.tasks) for s in samples)
    print(
        f"{len(samples)} scenes, {n_q} questions -> {a.out} in {time.perf_counter() - start:.1f} s"
    )


if __name__ == "__main__":
    main()
