"""Throughput of the synthetic-scene pipeline: rendering alone, then render + scene core.

    python bench/bench_synthetic.py [--scenes 40]

Prints scenes per second on one core for a few view/resolution settings (the baseline row
is the tiny model's default: 8 views of 112 px, 8 px patches).
"""

from __future__ import annotations

import argparse
import time

from llava3d_ros.synthetic.dataset import DataConfig, make_sample
from llava3d_ros.synthetic.render import render_scene
from llava3d_ros.synthetic.scenes import make_scene

SETTINGS = [(8, 112, 8), (8, 168, 14), (4, 56, 8), (20, 112, 8)]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scenes", type=int, default=40)
    n = p.parse_args().scenes
    print(f"{'views':>5} {'px':>5} {'patch':>5} {'render ms':>10} {'+core ms':>10} {'scenes/s':>9}")
    for views, px, patch in SETTINGS:
        t = time.perf_counter()
        for seed in range(n):
            render_scene(make_scene(seed), views, px)
        render_ms = 1000 * (time.perf_counter() - t) / n
        cfg = DataConfig(n_views=views, resolution=px, patch=patch)
        t = time.perf_counter()
        for seed in range(n):
            make_sample(seed, cfg)
        full_ms = 1000 * (time.perf_counter() - t) / n
        print(
            f"{views:>5} {px:>5} {patch:>5} {render_ms:>10.1f} {full_ms:>10.1f} {1000 / full_ms:>9.1f}"
        )


if __name__ == "__main__":
    main()
