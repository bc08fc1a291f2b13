"""The readout loss: a training-only aid that makes layer 1's output carry the answer's facts.

The described-object loss puts head 1 of layer 1's attention on the described object (about
36 % of it after p16k), yet grounding boxes land no nearer that object than a blind pick: the
later layers write each number from the category's usual place, not from what the head
fetched. ``readout_loss`` supervises what layer 1 hands on: training-only linear heads (not
saved; model and checkpoint format unchanged) read, from the residual stream after layer 1,
the described object's box centre (metres, smooth L1) at every position that writes a
grounding answer, and the count (cross-entropy over 0…MAX_OBJECTS) at the position that writes
a count. Its gradient reaches layer 1's attention and values without passing the later layers.
"""

from __future__ import annotations

import numpy as np
import torch

from llava3d_ros.synthetic.batches import PreparedScene, TurnEncoder
from llava3d_ros.synthetic.binding import _query_answers
from llava3d_ros.synthetic.scenes import MAX_OBJECTS
from llava3d_ros.synthetic.tasks import Task

COUNTS = MAX_OBJECTS + 1  # count classes 0…MAX_OBJECTS


def readout_targets(
    encoder: TurnEncoder, scenes: list[PreparedScene], tasks: list[list[Task]]
) -> tuple[list[tuple[int, int, np.ndarray]], list[tuple[int, int, int]]]:
    """(sequence, position, box centre) for every position that predicts a grounding answer
    token, and (sequence, position, count) for the position that predicts each count."""
    centres, counts = [], []
    for b, (scene, ts) in enumerate(zip(scenes, tasks, strict=True)):
        start = len(encoder.encode(ts)[0]) + scene.num_voxels
        for task, positions, _, _ in _query_answers(encoder, ts):
            if task.kind == "ground":
                centre = np.asarray(task.box[:3], np.float32)
                centres += [(b, int(start + p), centre) for p in positions]
            else:
                counts += [(b, int(start + p), int(task.answer)) for p in positions]
    return centres, counts


def readout_head(hidden: int, seed: int) -> torch.nn.Linear:
    """The training-only linear heads ``readout_loss`` reads layer 1's output with: three box-
    centre outputs, then one logit per count. Zero-initialised, so its first gradients reach
    only the head and the model is eased into the loss rather than jolted by a random head."""
    torch.manual_seed(seed)
    head = torch.nn.Linear(hidden, 3 + COUNTS)
    torch.nn.init.zeros_(head.weight)
    torch.nn.init.zeros_(head.bias)
    return head


def readout_loss(
    head: torch.nn.Linear,
    hidden: torch.Tensor,
    centres: list[tuple[int, int, np.ndarray]],
    counts: list[tuple[int, int, int]],
) -> torch.Tensor:
    """Smooth-L1 centre error plus count cross-entropy of ``head`` on ``hidden`` (B, T, H), the
    residual stream after layer 1; each term only where it has rows."""
    loss = hidden.new_zeros(())
    if centres:
        want = torch.from_numpy(np.stack([r[2] for r in centres])).to(hidden.device)
        pred = _read(head, hidden, centres)[:, :3]
        loss = loss + torch.nn.functional.smooth_l1_loss(pred, want)
    if counts:
        want = torch.tensor([r[2] for r in counts], device=hidden.device)
        loss = loss + torch.nn.functional.cross_entropy(_read(head, hidden, counts)[:, 3:], want)
    return loss


def _read(head: torch.nn.Linear, hidden: torch.Tensor, rows: list[tuple]) -> torch.Tensor:
    """``head`` on the (sequence, position) rows of ``hidden``, each RMS-normalised first as the
    model's own layers read the residual stream (its raw scale grows with depth and training)."""
    b = torch.tensor([r[0] for r in rows], device=hidden.device)
    t = torch.tensor([r[1] for r in rows], device=hidden.device)
    picked = hidden[b, t]
    return head(torch.nn.functional.rms_norm(picked, picked.shape[-1:]).to(head.weight.dtype))
