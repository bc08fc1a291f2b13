"""The value handed from the scene core to the model: one view, ready for LLaVA-3D."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ModelView:
    """One posed view at the model's input resolution.

    ``image`` is the resized + centre-cropped colour image (S×S×3 uint8, RGB), not yet
    normalised (normalisation belongs to the vision tower's preprocessing).
    ``patch_xyz`` holds the world position (aligned, z-up frame) of each G×G image patch,
    ``patch_valid`` marks patches with usable depth (invalid ones are left out of pooling).
    ``frame_id`` keys the per-keyframe vision-feature cache; ``stamp_ns`` is provenance.
    ``intrinsics`` (3×3, at S×S) and ``cam_to_world`` (4×4, aligned world) let answers be
    projected back into the view.
    """

    frame_id: int
    stamp_ns: int
    image: np.ndarray  # (S, S, 3) uint8 RGB
    patch_xyz: np.ndarray  # (G, G, 3) float32, world frame
    patch_valid: np.ndarray  # (G, G) bool
    intrinsics: np.ndarray  # (3, 3) float64, at S×S
    cam_to_world: np.ndarray  # (4, 4) float64, aligned world frame
    camera_frame: str = ""  # the optical frame of the camera that took it
