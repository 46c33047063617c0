"""``vizkit attribute``: a thin click layer over ``vizkit.jobs.attribute.run_attribute``."""
from __future__ import annotations

import sys
from typing import Any

import click
from vizkit_cli.common import errors_to_exit_codes, finish, image_command, model_options, progress

EPILOG = """\b
Examples:
  vizkit attribute cat.jpg                                   # saliency, integrated gradients, Grad-CAM; top-1 class
  vizkit attribute *.jpg --method all --evaluate             # every method, ranked on these images
  vizkit attribute cat.jpg -M lrp:epsilon-alpha2-beta1 -M smoothgrad:integrated-gradients --target "tiger cat"
  vizkit attribute photo.jpg --model resnet18 --weights none -M deeplift -M gradcam++ --baseline blur
"""


@click.command(epilog=EPILOG)
@image_command
@model_options
@click.option("--method", "-M", "methods", multiple=True, metavar="M",
              help="saliency, gradient-x-input, integrated-gradients, smoothgrad[:BASE], deeplift, gradient-shap, "
                   "occlusion, lrp[:COMPOSITE], gradcam, gradcam++, score-cam, eigen-cam, guided-backprop, "
                   "deconvnet, or all; repeatable. Default: saliency, integrated-gradients, gradcam.")
@click.option("--target", "-t", default="auto", show_default=True, metavar="T",
              help="auto (each image's top predicted class), a class index or a class name (case-insensitive).")
@click.option("--layer", "-l", default=None, metavar="L",
              help="Layer of the CAM methods, from model.named_modules(). Default: the last spatial feature layer.")
@click.option("--baseline", default="black", show_default=True, metavar="B",
              help="black (the model input's zero), blur, mean, or a .pt/.npy file holding a (C, H, W) tensor; "
                   "for integrated gradients, DeepLift, GradientSHAP, occlusion and --evaluate.")
@click.option("--samples", default=None, type=click.IntRange(min=1), metavar="N",
              help="Integrated-gradients steps (50), GradientSHAP samples (20), SmoothGrad samples (25).")
@click.option("--batch-size", default=8, show_default=True, type=click.IntRange(min=1),
              help="Images per call of a method.")
@click.option("--evaluate", is_flag=True,
              help="Also measure and rank the methods: deletion and insertion curves (MoRF, LeRF), ROAD and the "
                   "model-randomisation check.")
@click.option("--steps", default=20, show_default=True, type=click.IntRange(min=1),
              help="Deletion and insertion steps of --evaluate.")
@errors_to_exit_codes
def attribute(images: tuple[str, ...], model: str | None, weights: str | None, allow_download: bool,
              allow_pickle: bool, methods: tuple[str, ...], target: str, layer: str | None, baseline: str,
              samples: int | None, batch_size: int, evaluate: bool, steps: int, out: str, device: str,
              model_extra: dict[str, Any]) -> None:
    """Attribution maps of each IMAGE by the methods people expect, computed by Captum, zennit and vizkit's rules.

    Writes OUT/attribute/attribute.pdf (one page per image, the methods side by side), attribute.npz and
    attribute.manifest.json for all IMAGEs (the sample photos when none is given). A bad image is reported and
    skipped; the exit code is then 2.
    """
    from vizkit.jobs.attribute import DEFAULT_METHODS, AttributeConfig, run_attribute
    from vizkit.load import DEFAULT_MODEL, sample_images

    images = images or tuple(str(p) for p in sample_images())
    config = AttributeConfig(images=images, model=model or DEFAULT_MODEL, weights=weights,
                             methods=methods or DEFAULT_METHODS, target=target, layer=layer, baseline=baseline,
                             samples=samples, batch_size=batch_size, evaluate=evaluate, steps=steps, out=out,
                             device=device, allow_pickle=allow_pickle, allow_download=allow_download,
                             command=["vizkit", *sys.argv[1:]], **model_extra)
    with progress(len(images)) as step:
        report = run_attribute(config, progress=step)
    finish(report)
