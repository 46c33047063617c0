"""Ties among ``vizkit mine``'s top K on the default model, ranking the capped outputs and the values before the cap.

    python benchmarks/bench_mine_ties.py [--images 50] [--k 9] [--data DIR]

EfficientNet-Lite0 (the default model, its shipped weights) ends its layers in ReLU6, so ranking the outputs ties
the strongest images at 6.0. This scans the default layers of a folder of crops of the bundled photos
(``benchmarks/_images.py``) twice -- ``mine_dataset(..., uncap=False)`` (the outputs) and the default (the value
before the cap) -- and prints per layer what was ranked, the units with tied top-K entries, the units whose K
entries all tie, and those of them tied at the cap (6.0) or dead. Target: no unit all tied at a cap.
"""
from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np
import torch
from _images import make_image_folder
from _machine import machine

from vizkit.jobs.mine import mine_dataset
from vizkit.load import DEFAULT_MODEL, load_model
from vizkit.scan.topk import MineResult

CAP = 6.0  # ReLU6


def table(result: MineResult) -> tuple[list[str], int]:
    lines, at_cap_total = [], 0
    for name, layer in result.layers.items():
        ties, filled = layer.ties, layer.filled
        every = (ties == filled) & (filled > 1)
        at_cap = int(np.count_nonzero(every & (layer.values[:, 0] >= CAP)))
        at_cap_total += at_cap
        lines.append(f"  {name:12s} {layer.ranked:34s} channels {layer.channels:5d}  with ties "
                     f"{int(np.count_nonzero(ties)):5d}  all {result.k} tied {int(np.count_nonzero(every)):4d} "
                     f"(at the cap {at_cap}, dead {int(np.count_nonzero(every & layer.dead))})")
    return lines, at_cap_total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=50)
    parser.add_argument("--k", type=int, default=9)
    parser.add_argument("--data", default=None, help="image folder (default: crops made in a temporary folder)")
    args = parser.parse_args()
    print(machine("timm"))
    loaded = load_model(DEFAULT_MODEL)
    with tempfile.TemporaryDirectory() as tmp:
        data = args.data or str(make_image_folder(tmp, args.images))
        at_cap = {}
        for label, uncap in (("ranking the outputs (before issue 13)", False), ("ranking before the cap", True)):
            started = time.perf_counter()
            with torch.inference_mode():
                result = mine_dataset(loaded, data, k=args.k, uncap=uncap)
            lines, at_cap[uncap] = table(result)
            print(f"{DEFAULT_MODEL}, {result.images_scanned} images, K = {result.k}, {label} "
                  f"({time.perf_counter() - started:.1f} s):")
            print("\n".join(lines))
    print(f"target no unit all tied at the cap: {'met' if at_cap[True] == 0 else 'NOT met'} "
          f"({at_cap[False]} units before, {at_cap[True]} now)")


if __name__ == "__main__":
    main()
