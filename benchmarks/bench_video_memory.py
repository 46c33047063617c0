"""Video runs stream: peak memory does not grow with the number of frames.

    python benchmarks/bench_video_memory.py [--frames 30 300] [--mode gradcam|activations|deconv] [--size 640x480]

Writes one synthetic clip (a bright disc moving over noise, mp4v, ``--size``) long enough for the largest count,
then runs ``run_video`` on the first N frames in a fresh process per N and prints that process's peak resident
memory (``resource.getrusage(RUSAGE_SELF).ru_maxrss``) and the growth over the smallest N. The model is a small
seeded-random CNN on 112 x 112 inputs, so the numbers are about the pipeline, not a model. For scale, each line also
prints what the decoded frames alone would occupy if a run held them (W x H x 3 bytes each). Exits 1 when the growth
from the smallest to the largest N exceeds ``--limit-mb``.
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _machine import machine  # sibling module; benchmarks run as scripts


def write_clip(path: Path, frames: int, width: int, height: int) -> None:
    import cv2

    rng = np.random.default_rng(0)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"mp4v"), 25.0, (width, height))
    yy, xx = np.mgrid[0:height, 0:width]
    for i in range(frames):
        frame = rng.integers(0, 60, (height, width, 3), dtype=np.uint8)
        cx, cy = int(width * (0.1 + 0.8 * i / max(1, frames - 1))), height // 2
        frame[(yy - cy) ** 2 + (xx - cx) ** 2 < (height // 8) ** 2] = 230
        writer.write(frame)
    writer.release()


def child(clip: str, frames: int, mode: str, out: str) -> None:
    """One run in this process; prints a JSON line with the peak RSS and the time."""
    import torch
    from torch import nn

    from vizkit.jobs.video_steps import run_video
    from vizkit.load import LoadedModel, Preprocessing

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1), nn.ReLU(), nn.Conv2d(16, 32, 3, 2, 1), nn.ReLU(),
                          nn.MaxPool2d(2), nn.Conv2d(32, 64, 3, 1, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                          nn.Flatten(), nn.Linear(64, 10)).eval()
    loaded = LoadedModel(name="bench-cnn", model=model, preprocessing=Preprocessing(128, 112, (0.5,) * 3, (0.5,) * 3),
                         class_names=None, weights="seeded random (torch.manual_seed(0))", weights_sha256=None,
                         pretrained=False)
    start = time.perf_counter()
    result = run_video(loaded, clip, mode, out, max_frames=frames, layers=["5"] if mode != "deconv" else ["4"])
    seconds = time.perf_counter() - start
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kilobytes on Linux
    print(json.dumps({"frames": result.frames, "peak_mb": peak_kib / 1024, "seconds": seconds,
                      "npz_mb": result.arrays.stat().st_size / 2**20}))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, nargs="+", default=[30, 300])
    parser.add_argument("--mode", default="gradcam", choices=["gradcam", "activations", "deconv"])
    parser.add_argument("--size", default="640x480")
    parser.add_argument("--limit-mb", type=float, default=25.0)
    parser.add_argument("--child", nargs=4, metavar=("CLIP", "FRAMES", "MODE", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], int(args.child[1]), args.child[2], args.child[3])
        return 0
    width, height = (int(v) for v in args.size.split("x"))
    print(machine("opencv-python-headless"))
    counts = sorted(args.frames)
    peaks = []
    with tempfile.TemporaryDirectory() as tmp:
        clip = Path(tmp) / "clip.mp4"
        write_clip(clip, counts[-1], width, height)
        for n in counts:
            run = subprocess.run([sys.executable, __file__, "--child", str(clip), str(n), args.mode, f"{tmp}/out{n}"],
                                 capture_output=True, text=True, check=True)
            r = json.loads(run.stdout.strip().splitlines()[-1])
            peaks.append(r["peak_mb"])
            held = n * width * height * 3 / 2**20
            print(f"{args.mode} {r['frames']:4d} frames of {width}x{height}: peak RSS {r['peak_mb']:7.1f} MB "
                  f"(+{r['peak_mb'] - peaks[0]:5.1f} MB over {counts[0]} frames; holding the decoded frames alone "
                  f"would take {held:6.1f} MB); {r['seconds']:.1f} s; npz {r['npz_mb']:.1f} MB")
    growth = peaks[-1] - peaks[0]
    ok = growth <= args.limit_mb
    print(f"growth {growth:.1f} MB from {counts[0]} to {counts[-1]} frames: {'OK' if ok else 'FAIL'} "
          f"(limit {args.limit_mb:g} MB)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
