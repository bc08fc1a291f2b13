"""feature_probe: voxel labelling and the linear probe behind ``synthetic/probe_token_features.py``."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from llava3d_ros.synthetic.batches import PreparedScene
from llava3d_ros.synthetic.dataset import SceneSample
from llava3d_ros.synthetic.feature_probe import linear_probe, majority, voxel_objects


def _scene(centers: np.ndarray, boxes: np.ndarray) -> PreparedScene:
    sample = SceneSample(
        seed=0,
        images=np.zeros((1, 4, 4, 3), np.uint8),
        patch_xyz=np.zeros((1, 1, 1, 3), np.float32),
        patch_valid=np.ones((1, 1, 1), bool),
        tasks=[],
        boxes=boxes,
    )
    n = len(centers)
    return PreparedScene(sample, torch.zeros(1, 2), torch.zeros(1, 3), torch.zeros(1), n, centers)


def test_voxel_objects_labels_only_voxels_in_exactly_one_box():
    boxes = np.array([[0, 0, 0, 2, 2, 2], [1.5, 0, 0, 2, 2, 2]], float)  # overlap at x in [0.5, 1]
    centers = np.array([[-0.5, 0, 0], [0.75, 0, 0], [2.0, 0, 0], [5, 5, 5]], float)
    assert voxel_objects(_scene(centers, boxes)).tolist() == [0, -1, 1, -1]


def test_linear_probe_reads_a_linear_code_and_not_noise():
    rng = np.random.default_rng(0)
    y_a, y_b = rng.integers(0, 6, 600), rng.integers(0, 6, 300)
    code = rng.normal(size=(6, 16))
    x_a = torch.tensor(code[y_a] + 0.3 * rng.normal(size=(600, 16)), dtype=torch.float32)
    x_b = torch.tensor(code[y_b] + 0.3 * rng.normal(size=(300, 16)), dtype=torch.float32)
    assert linear_probe(x_a, y_a, x_b, y_b) > 0.95
    noise_a = torch.tensor(rng.normal(size=(600, 16)), dtype=torch.float32)
    noise_b = torch.tensor(rng.normal(size=(300, 16)), dtype=torch.float32)
    assert linear_probe(noise_a, y_a, noise_b, y_b) < 0.35  # chance is 1/6


def test_majority_is_the_training_sets_commonest_label():
    assert majority(np.array([2, 2, 1]), np.array([2, 1, 1, 1])) == pytest.approx(0.25)
