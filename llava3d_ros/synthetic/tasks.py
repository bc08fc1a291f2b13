"""Question/answer pairs about a procedural scene in the released LLaVA-3D prompt styles."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from llava3d_ros.geometry.clicks import click_to_world
from llava3d_ros.synthetic.render import RenderedViews
from llava3d_ros.synthetic.scenes import CATEGORIES, Box, Scene, SceneObject

CLICK = "<boxes>"  # the released model's sentinel for one click prompt
SHORT = "Answer the question using a single word or phrase."
TASK_KINDS: tuple[str, ...] = ("caption", "color", "category", "count", "ground")


@dataclass(frozen=True)
class Task:
    """One question (``<boxes>`` marks each click) with its reference answer."""

    kind: str
    question: str
    answer: str
    clicks: np.ndarray  # (k, 3) float32 world xyz, one per <boxes> in the question
    target: int | None = None  # index of the object asked about / to ground
    box: np.ndarray | None = None  # (6,) its ground-truth box, where the answer has one


def format_number(value: float) -> str:
    """One decimal, never '-0.0' (one token per number in the tiny tokenizer)."""
    text = f"{value:.1f}"
    return "0.0" if text == "-0.0" else text


def format_box(box: np.ndarray) -> str:
    """``[cx, cy, cz, dx, dy, dz]`` with one decimal, as the released model writes boxes."""
    box = np.asarray(box, float)
    if box.shape != (6,) or not np.all(np.isfinite(box)):
        raise ValueError(f"a box is 6 finite numbers, got {box!r}")
    return "[" + ", ".join(format_number(v) for v in box) + "]"


def click_point(obj: SceneObject, rng: np.random.Generator) -> np.ndarray:
    """A 3D point inside the object: uniform in a primitive chosen by its volume."""
    volumes = []
    for p in obj.primitives:
        if isinstance(p, Box):
            volumes.append(float(np.prod(p.hi - p.lo)))
        else:
            volumes.append(np.pi * p.radius**2 * (p.z1 - p.z0))
    prim = obj.primitives[int(rng.choice(len(volumes), p=np.array(volumes) / sum(volumes)))]
    if isinstance(prim, Box):
        return rng.uniform(prim.lo, prim.hi).astype(np.float32)
    r, a = prim.radius * np.sqrt(rng.uniform()), rng.uniform(0, 2 * np.pi)
    z = rng.uniform(prim.z0, prim.z1)
    return np.array([prim.cx + r * np.cos(a), prim.cy + r * np.sin(a), z], np.float32)


def surface_click(views: RenderedViews, index: int, rng: np.random.Generator) -> np.ndarray | None:
    """Where a click on an image showing object ``index`` lands: a random pixel of it in a
    random view, unprojected with its depth as the node does (None if no view shows it)."""
    view, rows, cols = np.nonzero(views.labels == index)
    if not len(view):
        return None
    j = int(rng.integers(len(view)))
    depth = np.where(views.depth[view[j]] > 0, views.depth[view[j]], np.nan)
    k, (h, w) = views.intrinsics, depth.shape
    point = click_to_world(
        float(cols[j]), float(rows[j]), depth, k, k, views.cam_to_world[view[j]], (w, h), window=1
    )
    return point.astype(np.float32)


def describe(scene: Scene, index: int, rng: np.random.Generator) -> str | None:
    """The shortest attribute phrase naming only object ``index``; None if none does."""
    target = scene.objects[index]
    candidates = [
        ("category",),
        ("color", "category"),
        ("size", "color", "category"),
    ]
    unique = []
    for attrs in candidates:
        key = tuple(getattr(target, a) for a in attrs)
        matches = [o for o in scene.objects if tuple(getattr(o, a) for a in attrs) == key]
        if len(matches) == 1:
            unique.append("the " + " ".join(key))
    if not unique:
        return None
    # When the bare category suffices, still sometimes name the colour: both must be learnt.
    return unique[int(rng.integers(min(len(unique), 2)))]


def visible_pixels(views: RenderedViews, n_objects: int) -> np.ndarray:
    """Pixels showing each object over all views (questions need the object to be seen)."""
    labels = views.labels[views.labels >= 0]
    return np.bincount(labels.ravel(), minlength=n_objects)[:n_objects]


def make_tasks(
    scene: Scene,
    rng: np.random.Generator,
    kinds: tuple[str, ...] = TASK_KINDS,
    visible: np.ndarray | None = None,
    min_pixels: int = 30,
    surface: RenderedViews | None = None,
) -> list[Task]:
    """All questions of ``kinds`` about the scene: per seen object and per category.

    Clicks are points inside the clicked object, or with ``surface`` (the scene's rendered
    views) points on its seen surface, as a click on an image gives.
    """
    unknown = set(kinds) - set(TASK_KINDS)
    if unknown:
        raise ValueError(f"unknown task kinds {sorted(unknown)}; known: {TASK_KINDS}")
    seen = [
        i for i in range(len(scene.objects)) if visible is None or int(visible[i]) >= min_pixels
    ]
    tasks: list[Task] = []

    def click(i: int) -> np.ndarray:
        point = surface_click(surface, i, rng) if surface is not None else None
        return (click_point(scene.objects[i], rng) if point is None else point)[None]

    for i in seen:
        obj = scene.objects[i]
        if "caption" in kinds:
            tasks.append(
                Task(
                    "caption",
                    f"The related object is located at {CLICK}. Describe the object in detail.",
                    f"A {obj.color} {obj.category}. It is localized at {format_box(obj.box)}.",
                    click(i),
                    i,
                    obj.box,
                )
            )
        if "color" in kinds:
            q = f"The related object is located at {CLICK}. What color is this object? {SHORT}"
            tasks.append(Task("color", q, obj.color, click(i), i))
        if "category" in kinds:
            q = f"The related object is located at {CLICK}. What is this object? {SHORT}"
            tasks.append(Task("category", q, obj.category, click(i), i))
        if "ground" in kinds:
            phrase = describe(scene, i, rng)
            if phrase is not None:
                q = (
                    f'"{phrase}" Which object best matches the given description? '
                    "Please provide its coordinates."
                )
                tasks.append(Task("ground", q, format_box(obj.box), _no_clicks(), i, obj.box))
    if "count" in kinds:
        for category in CATEGORIES:
            n = sum(o.category == category for o in scene.objects)
            q = f"How many {category}s are in the room? {SHORT}"
            tasks.append(Task("count", q, str(n), _no_clicks()))
    return tasks


def _no_clicks() -> np.ndarray:
    return np.zeros((0, 3), np.float32)
