"""vizkit's occlusion maps against Captum's ``Occlusion``: same model, image, window, stride and baseline.

    python benchmarks/bench_occlusion.py [--model resnet18|default] [--size 224] [--window 32] [--stride 16]
                                         [--batch 64] [--threads N] [--repeat 2]

Model: torchvision ResNet-18 with seeded random weights (eval) or ``default`` (the offline ImageNet-pretrained
EfficientNet-Lite0), on matplotlib's grace_hopper.jpg resized to ``--size``. Contenders, run alternately
``--repeat`` times, best time of each reported (the machine is shared):

- vizkit: ``occlusion_maps(model, x, layer, window, stride, batch)``: all four Zeiler–Fergus maps (layer activity,
  deconv projection, class probability, most probable label) from one forward per occluded batch;
- Captum: ``Occlusion(softmax(model)).attribute(x, sliding_window_shapes=(C, w, w), strides=(C, s, s),
  baselines=0, target=t, perturbations_per_eval=batch)``: the class-probability attribution only;
- Captum given a channels-last input (``x.contiguous(memory_format=torch.channels_last)``), for information: most
  of vizkit's lead on a CPU is that memory order, which Captum users can ask for too.

Agreement: Captum's per-pixel attribution must equal ``pixel_attribution(maps)`` (vizkit's per-position
probabilities turned into Captum's averaged drop) within 1e-6 + 1e-3 * max|attribution| (float32 convolutions in a
different memory order), else FAIL and exit 1.
"""
from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from dataclasses import replace

import numpy as np
import torch
from _machine import machine  # sibling module; benchmarks run as scripts

from vizkit.project.occlusion import occlusion_maps, pixel_attribution


def setup(name: str, size: int) -> tuple[torch.nn.Module, torch.Tensor, str]:
    from vizkit.capture import default_layers
    from vizkit.load import load_image, load_model, preprocess, sample_images

    torch.manual_seed(0)
    loaded = load_model() if name == "default" else load_model(name, "none")
    layer = default_layers(loaded.model, (1, 3, size, size))[-1]
    x = preprocess(load_image(sample_images()[0]), replace(loaded.preprocessing, resize=size, crop=size))
    return loaded.model, x, layer


def timed(fn: Callable[[], object]) -> tuple[float, float, object]:
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return time.perf_counter() - wall, time.process_time() - cpu, out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--model", default="resnet18")
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--window", type=int, default=32)
    ap.add_argument("--stride", type=int, default=16)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--repeat", type=int, default=2)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    from captum.attr import Occlusion

    model, x, layer = setup(args.model, args.size)
    c = x.shape[1]
    with torch.no_grad():
        target = int(model(x).argmax())
    occ = Occlusion(lambda t: torch.softmax(model(t), dim=1))
    contenders = {
        "vizkit": lambda: occlusion_maps(model, x, layer, window=args.window, stride=args.stride, batch=args.batch),
        "captum": lambda: occ.attribute(x, sliding_window_shapes=(c, args.window, args.window),
                                        strides=(c, args.stride, args.stride), baselines=0.0, target=target,
                                        perturbations_per_eval=args.batch),
        "captum-cl": lambda: occ.attribute(x.contiguous(memory_format=torch.channels_last),
                                           sliding_window_shapes=(c, args.window, args.window),
                                           strides=(c, args.stride, args.stride), baselines=0.0, target=target,
                                           perturbations_per_eval=args.batch),
    }
    wall = {k: [] for k in contenders}
    cpu = {k: [] for k in contenders}
    out: dict[str, object] = {}
    order = list(contenders)
    for _ in range(args.repeat):
        for name in order:
            w, t, out[name] = timed(contenders[name])
            wall[name].append(w)
            cpu[name].append(t)
        order = order[1:] + order[:1]  # rotate so no contender always runs first
    maps = out["vizkit"]
    ref = out["captum"][0].detach().double().numpy()  # (C, H, W), the same map in every channel
    ours = pixel_attribution(maps)
    err = float(np.abs(ref - ours[None]).max())
    err_cl = float(np.abs(out["captum-cl"][0].detach().double().numpy() - ref).max())
    scale = float(np.abs(ref).max())
    ok = err <= 1e-6 + 1e-3 * scale and maps.target == target
    n_pos = maps.probability.size
    print(f"machine: {machine('captum')}")
    print(f"model {args.model} (layer {layer}), input {tuple(x.shape)}, window {args.window}, stride "
          f"{args.stride}: {n_pos} occluder positions, batch {args.batch}, target {target}")
    for name in contenders:
        print(f"  {name:9s} best wall {min(wall[name]):7.2f} s   best CPU {min(cpu[name]):7.2f} s   "
              f"(all wall: {', '.join(f'{v:.2f}' for v in wall[name])})")
    print(f"  ratio captum / vizkit (wall): {min(wall['captum']) / min(wall['vizkit']):.2f}x   "
          f"(CPU): {min(cpu['captum']) / min(cpu['vizkit']):.2f}x")
    print(f"  agreement: max |captum - vizkit| = {err:.3g} (max |attribution| {scale:.3g}) -> "
          f"{'OK' if ok else 'FAIL'}; captum channels-last vs captum: {err_cl:.3g}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
