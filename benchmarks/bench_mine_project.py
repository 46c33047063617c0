"""`vizkit mine` pass 2 against Captum's NeuronDeconvolution: the same top-K projections, agreement and speed.

    python benchmarks/bench_mine_project.py [--units 64] [--images 64] [--k 9] [--threads 2] [--device cpu|cuda]
                                            [--quick] [--no-cone] [--repeat 1] [--save FILE]

VGG16 with seeded random weights (offline: no pretrained weights are downloaded; eval mode) and ``--images``
images generated offline by ``_images.py`` from the photos shipped with scikit-image and matplotlib (crops at
several scales and offsets, some mirrored), preprocessed to 224x224. Pass 1 (not timed here) is a plain per-image
top-K of ``features.29`` (ReLU after conv5_3); the ``--units`` channels with the largest mean activation are kept,
each with its top ``--k`` (image, position): 64 x 9 = 576 projections by default. They are computed by

- vizkit: ``project_requests`` (what ``vizkit mine`` runs): distinct images forwarded once in batches, backward
  in rounds over that graph, each convolution's backward restricted to the unit's cone (``cone=True``);
- Captum: one ``NeuronDeconvolution(model, layer).attribute(image, neuron_selector=(c, y, x))`` per projection;
- ``--no-cone``: also vizkit with the ordinary full-map backward (``cone=False``), for information.

The three are timed in the order vizkit, Captum, vizkit again (``--repeat`` rounds), so a load change on a shared
machine hits both; the ratio uses the median vizkit time.

vizkit seeds each projection with the unit's activation, so ``projection / activation`` must equal Captum's
attribution inside the unit's box (Captum's is zero outside it): the largest relative error over projections
(max |a - b| / max |b|) must stay below 1e-4, else it prints FAIL and exits 1. Timings on a shared machine are
noisy; the process CPU-time ratio is printed beside the wall-time ratio. ``--save`` writes the requests and
projections to an npz; ``--requests`` projects the requests of such a file instead of scanning
(``gpu_check.sh`` compares a CUDA run with a CPU run that way).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torchvision
from _machine import machine

from vizkit.capture.receptive_field import receptive_fields
from vizkit.capture.recorder import Recorder
from vizkit.load.dataset import ImageDataset, list_images
from vizkit.load.preprocessing import Preprocessing
from vizkit.project.mine_projection import Request, project_requests

LAYER = "features.29"
TARGET = 3.0
TOLERANCE = 1e-4
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def bench_images(n: int, folder: str | None = None) -> list[torch.Tensor]:
    """The benchmark folder of ``_images.py`` (``n`` offline crops of bundled photos, made if missing), read and
    preprocessed as ``vizkit mine`` does for VGG16 (resize 256, centre crop 224, ImageNet mean/std)."""
    from _images import make_image_folder

    root = Path(folder) if folder and Path(folder).is_dir() else make_image_folder(
        folder or Path(tempfile.gettempdir()) / f"vizkit-bench-images-{n}", n)
    dataset = ImageDataset(list_images(root, limit=n), Preprocessing(256, 224, MEAN, STD))
    images = [dataset[i][0] for i in range(len(dataset))]
    return [x for x in images if x is not None]


def top_requests(model: torch.nn.Module, images: Sequence[torch.Tensor], units: int, k: int,
                 device: torch.device) -> tuple[list[Request], list[float]]:
    """Pass 1 by brute force: per channel the top-k images by spatial maximum (ties: smaller index, first
    position); the ``units`` channels with the largest mean activation. Returns requests and their values."""
    maxima, where, means = [], [], []
    with torch.no_grad(), Recorder(model, [LAYER], stop=True) as rec:
        for start in range(0, len(images), 16):
            rec.outputs.clear()
            rec.run(torch.stack(list(images[start : start + 16])).to(device))
            a = rec.outputs[LAYER].float().cpu()
            flat = a.flatten(2)
            peak = flat.max(dim=2).values
            maxima.append(peak)
            where.append((flat == peak[..., None]).float().argmax(dim=2))
            means.append(a.mean(dim=(2, 3)))
    peak, pos, mean = torch.cat(maxima), torch.cat(where), torch.cat(means).mean(dim=0)
    width = int(a.shape[3])
    channels = torch.argsort(-mean, stable=True)[:units]
    requests, values = [], []
    for ch in channels.tolist():
        order = sorted(range(len(images)), key=lambda i: (-float(peak[i, ch]), i))[:k]
        for i in order:
            p = int(pos[i, ch])
            requests.append(Request(ch, i, (p // width, p % width)))
            values.append(float(peak[i, ch]))
    return requests, values


def captum_projections(model: torch.nn.Module, images: Sequence[torch.Tensor], requests: Sequence[Request],
                       device: torch.device) -> list[np.ndarray]:
    from captum.attr import NeuronDeconvolution

    method = NeuronDeconvolution(model, dict(model.named_modules())[LAYER])
    out = []
    for r in requests:
        x = images[r.image][None].to(device)
        out.append(method.attribute(x, neuron_selector=(r.channel, *r.position))[0].detach().cpu().numpy())
    return out


def timed(fn: Callable[[], object], device: torch.device) -> tuple[float, float, object]:
    """(wall seconds, process CPU seconds, result); synchronises CUDA so the wall time is the work's."""
    if device.type == "cuda":
        torch.cuda.synchronize()
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - wall, time.process_time() - cpu, result


def interleaved(ours: Callable[[], Any], theirs: Callable[[], Any], rounds: int, device: torch.device,
                per: Callable[[float], str]) -> tuple[Any, Any, tuple[float, float], tuple[float, float]]:
    """vizkit, Captum, vizkit, ..., Captum, vizkit (``rounds`` Captum runs; 0: vizkit and Captum once each): both
    see the same load changes on a shared machine. Returns both results and the median (wall, CPU) seconds."""
    mine: list[tuple[float, float]] = []
    other: list[tuple[float, float]] = []
    for _ in range(max(1, rounds)):
        wall, cpu, result = timed(ours, device)
        mine.append((wall, cpu))
        print(f"vizkit (cone)     {wall:8.2f} s wall {cpu:8.2f} s CPU  ({per(wall)})", flush=True)
        wall, cpu, ref = timed(theirs, device)
        other.append((wall, cpu))
        print(f"captum            {wall:8.2f} s wall {cpu:8.2f} s CPU  ({per(wall)})", flush=True)
    if rounds > 0:  # --repeat 0: one vizkit and one Captum run (the 64 x 9 figure, about 10 CPU-minutes)
        wall, cpu, result = timed(ours, device)
        mine.append((wall, cpu))
        print(f"vizkit (cone)     {wall:8.2f} s wall {cpu:8.2f} s CPU  ({per(wall)})", flush=True)
    median = lambda ts: (float(np.median([t[0] for t in ts])), float(np.median([t[1] for t in ts])))  # noqa: E731
    return result, ref, median(mine), median(other)


def max_rel_err(ours: Sequence[tuple[np.ndarray, tuple[int, int, int, int]]], values: Sequence[float],
                ref: Sequence[np.ndarray]) -> float:
    worst = 0.0
    for (p, (y0, y1, x0, x1)), v, full in zip(ours, values, ref, strict=True):
        inside = full[:, y0:y1, x0:x1]
        scale = max(float(np.abs(full).max()), np.finfo(np.float32).tiny)
        rest = full.copy()
        rest[:, y0:y1, x0:x1] = 0
        outside = float(np.abs(rest).max()) / scale  # Captum's projection must vanish outside the box
        worst = max(worst, float(np.abs(p / v - inside).max()) / scale if v != 0 else 0.0, outside)
    return worst


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--units", type=int, default=64, help="units projected (default 64)")
    parser.add_argument("--images", type=int, default=None, help="images in the generated dataset (default 64)")
    parser.add_argument("--k", type=int, default=9, help="top-K images per unit (default 9)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    parser.add_argument("--batch-size", type=int, default=16, help="vizkit's batch size (default 16)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    parser.add_argument("--quick", action="store_true", help="4 units x top-3 (of 8 images unless --images)")
    parser.add_argument("--no-cone", action="store_true", help="also time vizkit with the full-map backward")
    parser.add_argument("--repeat", type=int, default=1,
                        help="Captum runs, each between two vizkit runs (default 1; 0: one of each)")
    parser.add_argument("--save", help="write requests and projections to this npz")
    parser.add_argument("--requests", help="project the requests saved by an earlier --save instead of scanning")
    parser.add_argument("--data", help="benchmark image folder (made there by _images.py if missing)")
    args = parser.parse_args(argv)
    if args.quick:
        args.units, args.k = 4, 3
    args.images = args.images or (8 if args.quick else 64)
    torch.set_num_threads(args.threads)
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False  # exact comparisons
    device = torch.device(args.device)
    torch.manual_seed(0)
    model = torchvision.models.vgg16().eval().to(device)
    images = bench_images(args.images, args.data)
    if args.requests:  # the same projections as an earlier run (gpu_check.sh: CUDA redoes the CPU's requests)
        with np.load(args.requests) as saved:
            requests = [Request(int(c), int(i), (int(y), int(x))) for c, i, y, x in saved["requests"]]
            values = [float(v) for v in saved["values"]]
    else:
        requests, values = top_requests(model, images, args.units, args.k, device)
    print(f"machine: {machine('captum')}; device {device}", flush=True)
    print(f"VGG16 (random init, seeded) {LAYER}: {args.units} units x top-{args.k} of {args.images} generated "
          f"images = {len(requests)} projections, {len({r.image for r in requests})} distinct images")
    rf = receptive_fields(model, (1, 3, 224, 224))[LAYER]
    on_device = {i: x.to(device) for i, x in enumerate(images)}
    project = lambda cone: project_requests(model, on_device, LAYER, requests, receptive_field=rf,  # noqa: E731
                                            batch_size=args.batch_size, cone=cone)
    per = lambda w: f"{1000 * w / len(requests):.1f} ms/projection"  # noqa: E731
    ours, ref, (wall, cpu), (cwall, ccpu) = interleaved(lambda: project(True), lambda: captum_projections(
        model, images, requests, device), args.repeat, device, per)
    err = max_rel_err(ours, values, ref)  # type: ignore[arg-type]
    if args.no_cone:
        pwall, pcpu, full = timed(lambda: project(False), device)
        err = max(err, max_rel_err(full, values, ref))  # type: ignore[arg-type]
        print(f"vizkit, full map  {pwall:8.2f} s wall {pcpu:8.2f} s CPU  (the cone backward buys {pwall / wall:.2f}x)")
    print(f"max relative error vs captum: {err:.2e} (tolerance {TOLERANCE:g})")
    if args.save:
        np.savez_compressed(args.save, requests=np.array([(r.channel, r.image, *r.position) for r in requests]),
                            values=np.array(values, np.float32),
                            **{f"p{i}": p for i, (p, _) in enumerate(ours)})  # type: ignore[misc]
    ratio = cwall / wall
    print(f"speed-up: {ratio:.2f}x wall, {ccpu / cpu:.2f}x CPU time")
    print(f"target {len(requests)} projections >= {TARGET:g}x faster than captum NeuronDeconvolution: "
          f"{'met' if ratio >= TARGET else 'NOT met'} ({ratio:.2f}x wall; {ccpu / cpu:.2f}x CPU time)")
    if err > TOLERANCE:
        print("FAIL: vizkit and captum disagree")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
