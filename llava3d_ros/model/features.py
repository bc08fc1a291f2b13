"""Per-keyframe CLIP feature cache: the vision tower runs once per frame id."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable

import torch


class FeatureCache:
    """Bounded LRU of (G·G, C) patch features keyed by frame id; ``computed`` counts tower runs."""

    def __init__(self, capacity: int = 64) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self._items: OrderedDict[int, torch.Tensor] = OrderedDict()
        self.computed = 0
        self.hits = 0

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, frame_id: int) -> bool:
        return frame_id in self._items

    def get(self, frame_id: int) -> torch.Tensor | None:
        feats = self._items.get(frame_id)
        if feats is not None:
            self._items.move_to_end(frame_id)
            self.hits += 1
        return feats

    def put(self, frame_id: int, feats: torch.Tensor) -> None:
        self._items[frame_id] = feats
        self._items.move_to_end(frame_id)
        self.computed += 1
        while len(self._items) > self.capacity:
            self._items.popitem(last=False)

    def drop(self, frame_ids: Iterable[int]) -> None:
        """Forget frames the buffer evicted, so their memory is freed now rather than by LRU."""
        for fid in frame_ids:
            self._items.pop(fid, None)

    def retain(self, frame_ids: Iterable[int]) -> None:
        """Keep only these frames (the buffer's current keyframes)."""
        keep = set(frame_ids)
        for fid in [f for f in self._items if f not in keep]:
            del self._items[fid]

    def clear(self) -> None:
        self._items.clear()
