"""Square-root-style re-balancing of the counting questions a training sequence asks.

Asked about every category of rooms of 3–7 objects, counting answers are skewed: over the
training seeds 0–3999 the answer is 0 for 42 % of questions, 1 for 38 %, 2 for 15 %, 3 for 4 %
and 4 for 0.6 %. A model trained on those draws answers 0, 1 or 2 and never 3 or 4. With
``power`` p a sequence's counting question is drawn among its scene's with weight
freq(answer) ** -p, freq taken over the training set: p = 0 is the plain draw, p = 1 gives
every answer the same share, p = 0.5 (the square-root sampling of long-tail training) halves
the skew in log terms. Only which count question is asked changes; the kinds' mix does not.
"""

from __future__ import annotations

import random
from collections import Counter

from llava3d_ros.synthetic.dataset import SceneSample
from llava3d_ros.synthetic.tasks import Task


def count_weights(samples: list[SceneSample], power: float) -> dict[str, float]:
    """Draw weight of each counting answer: its frequency over ``samples`` to the ``-power``."""
    if power < 0:
        raise ValueError(f"the count-balance power must be >= 0, got {power}")
    freq = Counter(t.answer for s in samples for t in s.tasks if t.kind == "count")
    total = sum(freq.values())
    return {answer: (n / total) ** -power for answer, n in freq.items()}


def rebalance_counts(
    tasks: list[Task], sample: SceneSample, weights: dict[str, float], rng: random.Random
) -> list[Task]:
    """``tasks`` with its counting questions redrawn, distinct, from ``sample``'s by ``weights``."""
    k = sum(t.kind == "count" for t in tasks)
    if k == 0:
        return tasks
    pool = [t for t in sample.tasks if t.kind == "count"]
    drawn = []
    for _ in range(k):  # weighted draws without replacement (random.choices has replacement)
        j = rng.choices(range(len(pool)), weights=[weights.get(t.answer, 1.0) for t in pool])[0]
        drawn.append(pool.pop(j))
    it = iter(drawn)
    return [next(it) if t.kind == "count" else t for t in tasks]
