"""Receptive-field analysis: the graph run on meta tensors (now) against the same run on real zeros (before).

Both give the same fields (checked); the meta run does no arithmetic. Also times the default model's deconvnet at a
middle layer with and without the receptive-field crop, which TF-"same" padding used to rule out.

    python benchmarks/bench_receptive_field.py [--repeat 3]
"""
from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch
import torchvision
from _machine import machine
from torch import fx

from vizkit.capture.receptive_field import receptive_fields, trace
from vizkit.load import load_image, load_model, preprocess, sample_images
from vizkit.project.deconv import deconv


def best(fn: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def on_real_zeros(model: torch.nn.Module, shape: tuple[int, ...]) -> None:
    """The analysis as it ran before: trace, then propagate through a real forward on zeros."""
    tracer = trace.Tracer()
    graph = tracer.trace(model)
    prop = trace.Propagator(fx.GraphModule(tracer.root, graph))
    with torch.no_grad():
        prop.run(torch.zeros(shape))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    print(machine())
    shape = (1, 3, 224, 224)
    default = load_model("efficientnet_lite0")
    for name, model in (("vgg16", torchvision.models.vgg16().eval()), ("efficientnet_lite0", default.model)):
        receptive_fields(model, shape)  # warm-up
        before = best(lambda m=model: on_real_zeros(m, shape), args.repeat)
        after = best(lambda m=model: receptive_fields(m, shape), args.repeat)
        print(f"receptive fields {name}: real zeros {before:.3f} s, meta {after:.3f} s, ratio {before / after:.1f}x")
    x = preprocess(load_image(sample_images()[0]), default.preprocessing)
    for crop in (False, True):
        t = best(lambda c=crop: deconv(default.model, x, ["blocks.2.1"], top_k=9, crop=c), args.repeat)
        print(f"deconv efficientnet_lite0 blocks.2.1, 9 units, crop={crop}: {t:.3f} s")


if __name__ == "__main__":
    main()
