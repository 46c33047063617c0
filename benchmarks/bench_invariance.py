"""``vizkit invariance`` on one image: three transforms x 25 steps on the default model (target: <= 15 s on 2 cores).

    python benchmarks/bench_invariance.py [--steps 25] [--threads 2] [--repeat 2] [--unbatched]

Model: the offline ImageNet-pretrained default (EfficientNet-Lite0), on matplotlib's grace_hopper.jpg; layers: the
first and the last resolution stage (the defaults). Timed, best of ``--repeat`` (the machine may be shared; the
process CPU time is printed beside the wall time, since CPU time is what other load does not inflate):

- sweep: ``invariance_tensor`` (per transform, the original and its 25 copies in one forward, channels-last);
- render: the npz, csv, PDF and manifest (``write_outputs``, the one writer);
- with ``--unbatched``, for information: the same sweep with one forward per transformed image (``batch=2``: the
  original and one copy), the design the batching replaces. Agreement: its curves must equal the batched ones
  within 1e-5, else FAIL and exit 1.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from _machine import machine

from vizkit.jobs import RunContext
from vizkit.jobs.invariance import build_sweeps, invariance_layers, invariance_tensor
from vizkit.load import load_model, sample_images
from vizkit.project.results import InvarianceResult
from vizkit.render import write_outputs


def timed(fn, repeat: int) -> tuple[float, float, object]:
    """Best wall and CPU seconds over ``repeat`` calls, and the last result."""
    best_wall, best_cpu, out = float("inf"), float("inf"), None
    for _ in range(repeat):
        w0, c0 = time.perf_counter(), time.process_time()
        out = fn()
        best_wall, best_cpu = min(best_wall, time.perf_counter() - w0), min(best_cpu, time.process_time() - c0)
    return best_wall, best_cpu, out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--unbatched", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    ctx = RunContext.from_loaded(load_model(), command="bench_invariance")
    image = sample_images()[0]
    x = ctx.input(image)
    layers = invariance_layers(ctx, None)
    sweeps = build_sweeps(ctx, steps=args.steps)
    print(f"machine: {machine()}")
    print(f"model {ctx.loaded.name}, {image.name}, layers {layers}, 3 transforms x {args.steps} steps")
    wall, cpu, outcome = timed(lambda: invariance_tensor(ctx, x, sweeps, layers), args.repeat)
    assert isinstance(outcome, InvarianceResult)
    print(f"sweep   wall {wall:6.2f} s   cpu {cpu:6.2f} s")
    info = ctx.info(image, {})
    with tempfile.TemporaryDirectory() as tmp:
        r_wall, r_cpu, _ = timed(lambda: write_outputs(outcome, info, Path(tmp), "bench", {}), 1)
    print(f"render  wall {r_wall:6.2f} s   cpu {r_cpu:6.2f} s")
    print(f"total   wall {wall + r_wall:6.2f} s   cpu {cpu + r_cpu:6.2f} s   (target <= 15 s on 2 cores)")
    if args.unbatched:
        u_wall, u_cpu, single = timed(lambda: invariance_tensor(ctx, x, sweeps, layers, batch=2), 1)
        assert isinstance(single, InvarianceResult)
        print(f"unbatched sweep  wall {u_wall:6.2f} s   cpu {u_cpu:6.2f} s   ({u_wall / wall:.1f}x the batched wall)")
        for a, b in zip(outcome.sweep.curves, single.sweep.curves, strict=True):
            worst = max(float(np.abs(a.probability - b.probability).max()),
                        *(float(np.abs(a.distance[n] - b.distance[n]).max()) for n in layers))
            if worst > 1e-5:
                print(f"FAIL: {a.name} batched and unbatched curves differ by {worst:.2e}")
                return 1
        print("agreement: batched == unbatched within 1e-5")
    return 0


if __name__ == "__main__":
    sys.exit(main())
