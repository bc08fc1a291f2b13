"""A generated room as a posed RGB-D sequence: what ``llava3d-ros replay --synthetic SEED`` plays.

The views are the demo's (``demo.py``): ``scenes.make_scene(seed)`` rendered by
``render.render_scene`` on its orbit trajectory at the embedded model's input size, so the
node sees the kind of room the embedded model was trained on. The sequence behaves like a
dataset reader (``scene.readers``): iterate it for ``Frame`` values stamped 1 + ``i / fps`` s.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from llava3d_ros.scene.frame import Frame
from llava3d_ros.scene.readers.base import DatasetReader

START_NS = 1_000_000_000  # the first stamp: 1 s, as the demo's (a zero stamp reads as "unset")


class SyntheticSequence(DatasetReader):
    """``n_views`` rendered views of the generated room ``seed``; frame ``i`` at 1 + i/fps s."""

    layout = "synthetic"

    def __init__(
        self,
        seed: int,
        n_views: int = 8,
        fps: float = 5.0,
        resolution: int | None = None,
        hfov_deg: float = 70.0,
    ) -> None:
        from llava3d_ros.demo import _model_image_size
        from llava3d_ros.synthetic.render import render_scene
        from llava3d_ros.synthetic.scenes import make_scene

        if not fps > 0 or n_views < 1:
            raise ValueError(f"fps must be > 0 and n_views >= 1, got {fps}, {n_views}")
        super().__init__(Path(f"synthetic:{seed}"))
        self.seed = int(seed)
        self.fps = float(fps)
        self.scene = make_scene(self.seed)
        size = _model_image_size() if resolution is None else int(resolution)
        self.rendered = render_scene(self.scene, n_views, size, hfov_deg, 0.0, 0.0)

    @property
    def intrinsics(self) -> np.ndarray:
        return self.rendered.intrinsics.copy()

    @property
    def object_names(self) -> list[str]:
        return [o.name for o in self.scene.objects]

    def __len__(self) -> int:
        return len(self.rendered.rgb)

    def __iter__(self) -> Iterator[Frame]:
        r = self.rendered
        for i in range(len(r.rgb)):
            yield Frame.from_raw(
                r.rgb[i],
                r.depth[i].astype(np.float32),  # metres; 0 (a miss) decodes as invalid
                r.intrinsics,
                r.cam_to_world[i],
                START_NS + round(i * 1e9 / self.fps),
            )

    def describe(self) -> str:
        """One line: the room and its objects."""
        size = self.rendered.rgb.shape[1]
        return (
            f"synthetic room {self.seed} ({len(self.scene.objects)} objects: "
            f"{', '.join(self.object_names)}; {len(self)} views {size}x{size})"
        )

    def __repr__(self) -> str:
        return f"SyntheticSequence(seed={self.seed}, {len(self)} frames)"
