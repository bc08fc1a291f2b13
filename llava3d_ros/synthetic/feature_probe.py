"""What a scene token carries: linear probes of each voxel token's object category and colour.

Grounding ("the chair") and counting need the LLM's attention to match a description against
scene tokens, so a token's key can only carry what the token does. ``probe_tokens`` labels every
voxel that lies in exactly one object's box with that object's category and colour, and fits a
softmax-regression probe on training scenes' tokens, scored on held-out scenes' tokens. Two
feature sets: the tower's patch features pooled per voxel (what the vision tower gives) and the
scene tokens the LLM is fed (the same after the 3D position embedding and the projector).
"""

from __future__ import annotations

import numpy as np
import torch

from llava3d_ros.geometry.voxels import VoxelAssignment, pool_features
from llava3d_ros.model.loader import ModelBundle
from llava3d_ros.synthetic.batches import PreparedScene
from llava3d_ros.synthetic.scenes import CATEGORIES, COLORS

FEATURE_SETS = ("tower", "tokens")


def voxel_objects(scene: PreparedScene) -> np.ndarray:
    """Per voxel, the index of the one object whose box holds its centre (−1: none or several)."""
    inside = np.stack(
        [
            np.all(np.abs(scene.centers - box[:3]) <= box[3:] / 2, axis=1)
            for box in scene.sample.boxes
        ],
        axis=1,
    )
    return np.where(inside.sum(1) == 1, inside.argmax(1), -1)


@torch.no_grad()
def voxel_features(bundle: ModelBundle, scene: PreparedScene, which: str) -> torch.Tensor:
    """(num_voxels, C) features: pooled tower features, or the scene tokens the LLM gets."""
    if which not in FEATURE_SETS:
        raise ValueError(f"feature set {which!r}; known: {FEATURE_SETS}")
    empty = torch.empty(0)
    assignment = VoxelAssignment(scene.patch_to_voxel, empty, empty, scene.num_voxels)
    if which == "tower":
        return pool_features(scene.feats, assignment)
    lm = bundle.lm
    pooled = pool_features(scene.feats + lm.patch_pos_mlp(scene.xyz), assignment)
    return lm.model.mm_projector(pooled)


def labelled_tokens(
    bundle: ModelBundle, scenes: list[PreparedScene], which: str
) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
    """Features of every voxel inside exactly one object, with its category and colour index."""
    xs, cats, cols = [], [], []
    for scene in scenes:
        obj = voxel_objects(scene)
        keep = np.flatnonzero(obj >= 0)
        xs.append(voxel_features(bundle, scene, which)[torch.from_numpy(keep)])
        names = [scene.sample.names[i].split() for i in obj[keep]]
        cats += [CATEGORIES.index(n[-1]) for n in names]
        cols += [list(COLORS).index(n[0]) for n in names]
    return torch.cat(xs).float(), np.asarray(cats), np.asarray(cols)


def linear_probe(
    x_train: torch.Tensor,
    y_train: np.ndarray,
    x_test: torch.Tensor,
    y_test: np.ndarray,
    steps: int = 300,
    weight_decay: float = 1e-3,
) -> float:
    """Held-out accuracy of a softmax regression on standardised features (full-batch L-BFGS).

    Hand-written because the environment has no scikit-learn; this is its LogisticRegression
    with an L2 penalty, on torch.
    """
    mean, std = x_train.mean(0), x_train.std(0).clamp(min=1e-6)
    a, b = (x_train - mean) / std, (x_test - mean) / std
    n_classes = int(max(y_train.max(), y_test.max())) + 1
    torch.manual_seed(0)
    probe = torch.nn.Linear(a.shape[1], n_classes)
    target = torch.from_numpy(y_train).long()
    opt = torch.optim.LBFGS(probe.parameters(), max_iter=steps, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(probe(a), target)
        loss = loss + weight_decay * probe.weight.square().sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        return float((probe(b).argmax(1).numpy() == y_test).mean())


def majority(y_train: np.ndarray, y_test: np.ndarray) -> float:
    """Held-out accuracy of always answering the training set's commonest label."""
    return float((y_test == np.bincount(y_train).argmax()).mean())


def probe_tokens(
    bundle: ModelBundle, train: list[PreparedScene], test: list[PreparedScene]
) -> dict[str, float]:
    """Held-out probe accuracy (and the majority baseline) for category and colour, per feature
    set, plus the number of labelled tokens."""
    out: dict[str, float] = {}
    for which in FEATURE_SETS:
        x_a, cat_a, col_a = labelled_tokens(bundle, train, which)
        x_b, cat_b, col_b = labelled_tokens(bundle, test, which)
        for name, y_a, y_b in (("category", cat_a, cat_b), ("colour", col_a, col_b)):
            out[f"{which}_{name}"] = linear_probe(x_a, y_a, x_b, y_b)
            out[f"majority_{name}"] = majority(y_a, y_b)
        out["train_tokens"], out["test_tokens"] = float(len(x_a)), float(len(x_b))
    return out
