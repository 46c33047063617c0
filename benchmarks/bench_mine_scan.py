"""The dataset scan of ``vizkit mine`` (pass 1) against its limit and against zennit-crp, with agreement checks.

    python benchmarks/bench_mine_scan.py [--images 64] [--crp-images 32] [--batch-size 16] [--threads 2]
                                         [--repeat 2] [--device cpu|cuda] [--skip-crp] [--data DIR]
                                         [--relevance [--relevance-layers default] [--class 1]]

VGG16 with seeded random weights (no network here: torchvision's pretrained file cannot be downloaded; the scan's
cost does not depend on the weights), ImageNet preprocessing, on a folder of crops of the photos shipped with
scikit-image and matplotlib (``benchmarks/_images.py``; made in a temporary folder unless ``--data``).

1. **Throughput.** The same ``DataLoader`` of ``ImageBatch`` (files read and preprocessed in the loop) feeds

   - plain batched inference: ``model(x)`` per batch under ``torch.inference_mode`` -- the limit, one forward per
     image;
   - the scan: ``vizkit.jobs.mine_dataset(model, loader, default_layers, k=9)`` (hooks, per-batch top-K merge).

   Rounds alternate the order; the best wall time of each is compared. Agreement: the scan's top-K per channel
   equals a brute-force sort (value desc, index asc) over every image's stored maxima, from a separate pass.
   Target: scan throughput >= 0.8x inference.
2. **zennit-crp** (PyPI ``zennit-crp``): ``FeatureVisualization.run`` on the same model, ``--crp-images`` images
   and layer ``features.29`` (ReLU of conv5_3; nothing in-place overwrites it), with ``max_target="max"`` and
   ``abs_norm=False`` so that it ranks images by the spatial maximum of the activation, as vizkit does; it also
   computes relevances (its design: a backward per batch under an LRP composite). Agreement: for every channel
   the top-9 values are equal and, where the 9th value is strictly above the 10th, the image sets are equal.
   Target: vizkit >= 5x faster.

3. **Relevance mode** (``--relevance``, instead of 1 and 2): ``mine_dataset(..., rank="relevance", target=C)``
   against zennit-crp's ``FeatureVisualization.run`` in its relevance mode (defaults ``max_target="sum"``,
   ``abs_norm=True``; composite EpsilonPlusFlat with zennit's VGG canonizer, as vizkit's) on ``--crp-images``
   images, every image explained for class ``--class``, layer ``features.29`` (``--relevance-layers default``: the
   six default layers). Agreement: the top-9 relevance values are equal on every channel and the image sets are
   equal wherever the values are distinct (zennit-crp orders equal values arbitrarily). Target: vizkit >= 3x.

Ends with one ``target <what>: met (R x)`` / ``NOT met`` line per target. Timings on a shared machine are noisy:
the process CPU-time ratio is printed beside the wall-time one.
"""
from __future__ import annotations

import argparse
import copy
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torchvision
from _images import make_image_folder
from _machine import machine

from vizkit.capture.recorder import Recorder
from vizkit.capture.stages import default_layers
from vizkit.jobs.mine import mine_dataset
from vizkit.load.dataset import ImageDataset, list_images
from vizkit.load.preprocessing import Preprocessing
from vizkit.scan.stream import image_loader
from vizkit.scan.topk import MineResult

PREP = Preprocessing(256, 224, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
CRP_LAYER = "features.29"
K = 9


def vgg16(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torchvision.models.vgg16(weights=None).eval()


def timed(fn: Callable[[], object]) -> tuple[float, float, object]:
    """(wall seconds, CPU seconds of this process, result)."""
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return time.perf_counter() - wall, time.process_time() - cpu, out


def plain_inference(model: torch.nn.Module, loader: torch.utils.data.DataLoader, device: torch.device) -> int:
    n = 0
    with torch.inference_mode():
        for batch in loader:
            model(batch.x.to(device, non_blocking=True))
            n += int(batch.index.numel())
    if device.type == "cuda":
        torch.cuda.synchronize()
    return n


def scan(model: torch.nn.Module, loader: torch.utils.data.DataLoader, layers: list[str],
         device: torch.device) -> MineResult:
    result = mine_dataset(model, loader, layers, k=K, device=device)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return result


def stored_maxima(model: torch.nn.Module, dataset: ImageDataset, layers: list[str],
                  device: torch.device) -> dict[str, np.ndarray]:
    """(N, C) spatial maxima per layer, one image per forward, from copies of the recorded outputs."""
    rows: dict[str, list[np.ndarray]] = {name: [] for name in layers}
    with torch.no_grad():
        for i in range(len(dataset)):
            x = dataset[i][0]
            assert x is not None
            with Recorder(model, layers, stop=True) as rec:
                rec.run(x[None].to(device))
            for name in layers:
                rows[name].append(rec.outputs[name][0].flatten(1).amax(1).float().cpu().numpy())
    return {name: np.stack(v) for name, v in rows.items()}


def check_against_brute_force(result: MineResult, maxima: dict[str, np.ndarray]) -> float:
    """Largest |value difference| (index sets must match exactly, ties to the smaller index); raises on mismatch."""
    worst = 0.0
    for name, m in maxima.items():
        layer = result.layers[name]
        n = m.shape[0]
        order = np.lexsort((np.broadcast_to(np.arange(n)[:, None], m.shape), -m), axis=0)[:K].T  # (C, K)
        values = np.take_along_axis(m.T, order, 1)
        worst = max(worst, float(np.abs(values - layer.values[:, : order.shape[1]]).max()))
        tol = 1e-4 * max(1.0, float(np.abs(m).max()))
        if worst > tol:
            raise SystemExit(f"FAIL: scan values differ from brute force on {name} by {worst:.3g}")
        gap = (values[:, -1] > np.sort(m, 0)[::-1][K].T + tol) if n > K else np.ones(len(values), bool)
        bad = ~(order == layer.image_index[:, : order.shape[1]]).all(1) & gap
        if bad.any():
            raise SystemExit(f"FAIL: scan top-{K} of {name} differs from brute force on {int(bad.sum())} channels")
    return worst


def run_crp(model: torch.nn.Module, dataset: ImageDataset, n: int, batch_size: int, workdir: Path
            ) -> tuple[np.ndarray, np.ndarray]:
    """zennit-crp's FeatureVisualization.run; returns its (K, C) top image indices and activation values."""
    from crp.attribution import CondAttribution
    from crp.concepts import ChannelConcept
    from crp.visualization import FeatureVisualization
    from zennit.composites import EpsilonPlusFlat

    class Pairs(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return n

        def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
            x = dataset[i][0]
            assert x is not None
            return x, 0

    crp_model = copy.deepcopy(model)
    for m in crp_model.modules():  # zennit's backward hooks cannot take in-place ReLUs; same values either way
        if isinstance(m, torch.nn.ReLU):
            m.inplace = False
    attribution = CondAttribution(crp_model, no_param_grad=True)
    fv = FeatureVisualization(attribution, Pairs(), {CRP_LAYER: ChannelConcept()}, max_target="max", abs_norm=False,
                              path=str(workdir / "crp"))
    fv.run(EpsilonPlusFlat(), 0, n, batch_size=batch_size, checkpoint=500)
    folder = workdir / "crp" / "ActMax_max_unnormed"
    return np.load(folder / f"{CRP_LAYER}_data.npy")[:K], np.load(folder / f"{CRP_LAYER}_rel.npy")[:K]


def compare_crp(result: MineResult, crp_index: np.ndarray, crp_values: np.ndarray) -> tuple[int, int]:
    """(channels whose top-K image sets were compared -- all equal, channels skipped because the K-th value is tied
    or zero, so any of the tied images is a right answer); raises on any disagreement."""
    layer = result.layers[CRP_LAYER]
    kk = min(layer.values.shape[1], crp_values.shape[0])
    ours_v, ours_i = layer.values[:, :kk], layer.image_index[:, :kk]
    theirs_v, theirs_i = crp_values[:kk].T, crp_index[:kk].T
    if not np.allclose(np.sort(ours_v, 1), np.sort(theirs_v, 1), rtol=1e-4, atol=1e-5):
        raise SystemExit("FAIL: zennit-crp's top activation values differ from vizkit's")
    compared = tied = 0
    for c in range(ours_v.shape[0]):
        kth = ours_v[c, -1]
        if kth <= 0 or np.isclose(ours_v[c], kth, rtol=1e-5, atol=0).sum() > 1 or \
                np.isclose(theirs_v[c], kth, rtol=1e-5, atol=0).sum() > 1:
            tied += 1
            continue
        if set(ours_i[c].tolist()) != set(theirs_i[c].tolist()):
            raise SystemExit(f"FAIL: channel {c}: zennit-crp top-{K} {sorted(theirs_i[c])} != {sorted(ours_i[c])}")
        compared += 1
    return compared, tied


def run_crp_relevance(model: torch.nn.Module, dataset: ImageDataset, n: int, batch_size: int, layers: list[str],
                      cls: int, workdir: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """zennit-crp's FeatureVisualization.run, relevance mode: per layer its (K + 1, C) top image indices and values
    (the (K + 1)th tells whether the Kth place is tied)."""
    from crp.attribution import CondAttribution
    from crp.concepts import ChannelConcept
    from crp.visualization import FeatureVisualization
    from zennit.composites import EpsilonPlusFlat
    from zennit.torchvision import VGGCanonizer

    class Pairs(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return n

        def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
            x = dataset[i][0]
            assert x is not None
            return x, cls  # every image explained for the same class

    crp_model = copy.deepcopy(model)
    for m in crp_model.modules():  # zennit's backward hooks cannot take in-place ReLUs; same values either way
        if isinstance(m, torch.nn.ReLU):
            m.inplace = False
    fv = FeatureVisualization(CondAttribution(crp_model, no_param_grad=True), Pairs(),
                              {layer: ChannelConcept() for layer in layers}, path=str(workdir / "crp_rel"))
    fv.run(EpsilonPlusFlat([VGGCanonizer()]), 0, n, batch_size=batch_size, checkpoint=500)
    folder = workdir / "crp_rel" / "RelMax_sum_normed"
    return {layer: (np.load(folder / f"{layer}_data.npy")[:K + 1], np.load(folder / f"{layer}_rel.npy")[:K + 1])
            for layer in layers}


def compare_relevance(result: MineResult, crp: dict[str, tuple[np.ndarray, np.ndarray]]) -> tuple[int, int, float]:
    """(entries compared, entries tied in zennit-crp's values and not compared, max |value difference|); raises
    on any disagreement."""
    compared = tied = 0
    worst = 0.0
    for layer, (index, values) in crp.items():
        ours = result.layers[layer]
        theirs_v, theirs_i = values.T, index.T  # (C, K + 1)
        worst = max(worst, float(np.abs(ours.values - theirs_v[:, :K]).max()))
        if not np.allclose(ours.values, theirs_v[:, :K], rtol=1e-4, atol=1e-6):
            raise SystemExit(f"FAIL: zennit-crp's top relevance values differ from vizkit's on {layer}")
        gaps = np.abs(np.diff(theirs_v, axis=1)) > 1e-5 * np.abs(theirs_v).max(1, keepdims=True)
        distinct = np.ones_like(theirs_v, dtype=bool)
        distinct[:, 1:] &= gaps
        distinct[:, :-1] &= gaps
        distinct = distinct[:, :K]
        bad = np.argwhere((ours.image_index != theirs_i[:, :K]) & distinct)
        if len(bad):
            c = bad[0][0]
            raise SystemExit(f"FAIL: zennit-crp's top-{K} images differ from vizkit's on {layer}, e.g. channel {c}: "
                             f"{theirs_i[c].tolist()} {theirs_v[c].tolist()} vs {ours.image_index[c].tolist()} "
                             f"{ours.values[c].tolist()}")
        compared += int(distinct.sum())
        tied += int((~distinct).sum())
    return compared, tied, worst


def relevance_mode(args: argparse.Namespace, folder: Path, model: torch.nn.Module, device: torch.device,
                   work: Path) -> list[str]:
    layers = default_layers(model, (1, 3, 224, 224)) if args.relevance_layers == "default" else [CRP_LAYER]
    small = ImageDataset(list_images(folder, args.crp_images), PREP)
    loader = image_loader(small, batch_size=args.batch_size, device=device)

    def ours() -> MineResult:
        result = mine_dataset(model, loader, layers, k=K, device=device, rank="relevance", target=args.cls,
                              batch_size=args.batch_size)
        if device.type == "cuda":
            torch.cuda.synchronize()
        return result

    ours_wall, ours_cpu, result = timed(ours)
    crp_wall, crp_cpu, crp = timed(lambda: run_crp_relevance(model, small, args.crp_images, args.batch_size, layers,
                                                             args.cls, work))
    assert isinstance(result, MineResult) and isinstance(crp, dict)
    compared, tied, worst = compare_relevance(result, crp)
    print(f"relevance for class {args.cls}, {args.crp_images} images, {', '.join(layers)}: zennit-crp "
          f"FeatureVisualization.run {crp_wall:.2f} s; vizkit {ours_wall:.2f} s; ratio {crp_wall / ours_wall:.2f} "
          f"(CPU time ratio {crp_cpu / ours_cpu:.2f}); agreement: top-{K} values equal (max |diff| {worst:.2g}), "
          f"images equal on {compared} entries ({tied} entries with equal values not compared)")
    what = "6 default layers" if len(layers) > 1 else CRP_LAYER
    return [target(f"relevance mining >= 3x zennit-crp ({what}, {args.crp_images} images)", crp_wall / ours_wall,
                   3.0)]


def target(what: str, ratio: float, goal: float) -> str:
    return f"target {what}: {'met' if ratio >= goal else 'NOT met'} ({ratio:.2f}x)"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=int, default=64)
    p.add_argument("--crp-images", type=int, default=32)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeat", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--skip-crp", action="store_true")
    p.add_argument("--data", default=None, help="benchmark image folder (made there if missing)")
    p.add_argument("--relevance", action="store_true", help="relevance mining against zennit-crp (section 3)")
    p.add_argument("--relevance-layers", choices=["features.29", "default"], default="features.29")
    p.add_argument("--class", dest="cls", type=int, default=1, help="the class relevance is computed for")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    work = Path(tempfile.mkdtemp(prefix="bench_mine_"))
    folder = make_image_folder(args.data or work / "images", max(args.images, args.crp_images))
    print(f"machine: {machine('zennit-crp')}; device {device}")
    model = vgg16().to(device)
    if args.relevance:
        print("\n".join(relevance_mode(args, folder, model, device, work)))
        return
    layers = default_layers(model, (1, 3, 224, 224))
    dataset = ImageDataset(list_images(folder, args.images), PREP)
    loader = image_loader(dataset, batch_size=args.batch_size, workers=args.workers, device=device)
    print(f"{len(dataset)} images of {folder}, batch {args.batch_size}, layers {', '.join(layers)}")
    lines = []

    walls: dict[str, list[float]] = {"inference": [], "scan": []}
    cpus: dict[str, list[float]] = {"inference": [], "scan": []}
    result = None
    plain_inference(model, loader, device)  # warm-up: allocator, kernels, file cache
    for r in range(args.repeat):
        for name in (("inference", "scan") if r % 2 == 0 else ("scan", "inference")):
            fn = (lambda: plain_inference(model, loader, device)) if name == "inference" else (
                lambda: scan(model, loader, layers, device))
            wall, cpu, out = timed(fn)
            walls[name].append(wall)
            cpus[name].append(cpu)
            if name == "scan":
                result = out  # type: ignore[assignment]
    assert isinstance(result, MineResult)
    worst = check_against_brute_force(result, stored_maxima(model, dataset, layers, device))
    n = len(dataset)
    inf, sc = min(walls["inference"]), min(walls["scan"])
    print(f"plain inference: {inf:.2f} s ({n / inf:.1f} images/s); scan: {sc:.2f} s ({n / sc:.1f} images/s); "
          f"throughput ratio {inf / sc:.2f} (CPU time ratio {min(cpus['inference']) / min(cpus['scan']):.2f}); "
          f"agreement with brute force: index sets equal, max |value diff| {worst:.2g}")
    lines.append(target("scan throughput >= 0.8x plain inference", inf / sc, 0.8))

    if not args.skip_crp:
        small = ImageDataset(list_images(folder, args.crp_images), PREP)
        small_loader = image_loader(small, batch_size=args.batch_size, device=device)
        ours_wall, ours_cpu, ours = timed(lambda: scan(model, small_loader, [CRP_LAYER], device))
        crp_wall, crp_cpu, (crp_index, crp_values) = timed(  # type: ignore[misc]
            lambda: run_crp(model, small, args.crp_images, args.batch_size, work))
        assert isinstance(ours, MineResult)
        compared, tied = compare_crp(ours, crp_index, crp_values)
        print(f"zennit-crp FeatureVisualization.run ({args.crp_images} images, {CRP_LAYER}): {crp_wall:.2f} s; "
              f"vizkit scan: {ours_wall:.2f} s; ratio {crp_wall / ours_wall:.2f} (CPU time ratio "
              f"{crp_cpu / ours_cpu:.2f}); agreement: top-{K} values equal on all channels, image sets equal on "
              f"{compared} channels ({tied} with a tie at the {K}th place not compared)")
        lines.append(target(f"vizkit >= 5x faster than zennit-crp on {args.crp_images} images", crp_wall / ours_wall,
                            5.0))
    print("\n".join(lines))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
