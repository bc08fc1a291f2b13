"""Position-binding probes (issue #6): scene sets where only a click's 3D position says which object is meant.

  recolour  one room and camera path, colours drawn anew per variant: held-out variants are
            new colourings of known places, so naming the clicked object's colour needs the
            click bound to the scene tokens' 3D positions (nothing else tells the objects apart
            in a colouring never seen)
  boxes     the room's objects replaced by identical boxes, colours *and* camera path drawn
            anew per variant (harder: the views change too)

``binding_config`` is the tiny configuration the CI test and the probe script
(``python -m llava3d_ros.synthetic.probe_position_binding``) train: the wiring test's model size
with the tiny-model switches that bind fastest.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from llava3d_ros.synthetic.dataset import DataConfig, SceneSample, sample_from_scene
from llava3d_ros.synthetic.scenes import Box, Scene, SceneObject, make_scene, recolored
from llava3d_ros.synthetic.train import TrainConfig

RECIPES = ("recolour", "boxes")
PROBE_DATA = DataConfig(n_views=4, resolution=56, patch=8, kinds=("color",))


def identical_boxes(seed: int, half: float = 0.3) -> Scene:
    """The room of ``seed`` with each object replaced by the same 0.6×0.6×0.9 m box."""
    base = make_scene(seed)
    objects = [
        SceneObject(
            "cabinet",
            o.color,
            "small",
            [Box(np.array([*(o.box[:2] - half), 0.0]), np.array([*(o.box[:2] + half), 0.9]))],
        )
        for o in base.objects
    ]
    return replace(base, objects=objects)


def probe_samples(
    recipe: str, n: int, *, geometry: int = 0, objects: int = 0, data: DataConfig = PROBE_DATA
) -> list[SceneSample]:
    """``n`` variants of room ``geometry`` (its first ``objects`` objects; 0 = all), in order."""
    if recipe not in RECIPES:
        raise ValueError(f"unknown recipe {recipe!r}; known: {RECIPES}")
    room = make_scene(geometry) if recipe == "recolour" else identical_boxes(geometry)
    if objects:
        room = replace(room, objects=room.objects[:objects])
    rng = np.random.default_rng([geometry, 7])
    out = []
    for i in range(n):
        if recipe == "recolour":  # same room and camera path, new colours
            out.append(sample_from_scene(recolored(room, rng), data, 1000 * geometry + i))
        else:  # new colours and a new camera path (the path follows the seed)
            scene = replace(recolored(room, rng), seed=10_000 + i)
            out.append(sample_from_scene(scene, data, 10_000 + i))
    return out


def binding_config(steps: int, **overrides) -> TrainConfig:
    """Colour questions one per sequence (packed ones let later answers copy earlier ones),
    shared click/scene position code, rope_theta 1e6, Fourier octaves from 16 m."""
    cfg = TrainConfig(
        steps=steps,
        batch=4,
        questions=1,
        lr=2e-3,
        warmup=20,
        curriculum=0.0,
        kinds=PROBE_DATA.kinds,
        hidden=64,
        layers=2,
        heads=4,
        mm_hidden=32,
        vision_hidden=32,
        click_encoding="shared_position",
        rope_theta=1e6,
        fourier_freqs=6,
        fourier_wavelength=16.0,
    )
    return replace(cfg, **overrides)
