"""``vizkit gradcam``: a thin click layer over ``vizkit.jobs.gradcam.run_gradcam``."""
from __future__ import annotations

import sys
from typing import Any

import click
from vizkit_cli.common import errors_to_exit_codes, finish, frame_options, image_command, model_options, progress

EPILOG = """\b
Examples:
  vizkit gradcam                                  # sample photos, offline default model, top-1 class
  vizkit gradcam cat.jpg --target auto --target "tiger cat" --target 281
  vizkit gradcam photo.jpg --model resnet50 --weights my_resnet.pth --layer layer3 --out results
"""


@click.command(epilog=EPILOG)
@image_command
@model_options
@frame_options
@click.option("--layer", "-l", default=None, metavar="L",
              help="Layer name from model.named_modules(). Default: the last spatial feature layer.")
@click.option("--target", "-t", "targets", multiple=True, metavar="T",
              help="auto (top predicted class), a class index or a class name (case-insensitive); repeatable. "
                   "Default: auto.")
@click.option("--batch-size", default=8, show_default=True, type=click.IntRange(min=1),
              help="Images per forward pass.")
@errors_to_exit_codes
def gradcam(images: tuple[str, ...], model: str | None, weights: str | None, allow_download: bool,
            allow_pickle: bool, layer: str | None, targets: tuple[str, ...], out: str, device: str,
            batch_size: int,
            frames: dict[str, Any], model_extra: dict[str, Any]) -> None:
    """Grad-CAM, guided backprop and guided Grad-CAM of each IMAGE for one or more target classes.

    Writes OUT/<image>/gradcam.pdf, gradcam.npz and gradcam.manifest.json for every IMAGE (the sample photos when
    none is given). A bad image is reported and skipped; the exit code is then 2. A video file writes
    OUT/<video>/gradcam.mp4 (the overlay of the first target), .npz (per frame), .pdf (contact sheet) and
    .manifest.json, reading frames as chosen by --every and --max-frames.
    """
    from vizkit.jobs.gradcam import GradCamConfig, run_gradcam
    from vizkit.load import DEFAULT_MODEL, sample_images

    images = images or tuple(str(p) for p in sample_images())
    config = GradCamConfig(images=images, model=model or DEFAULT_MODEL, weights=weights, layer=layer,
                           targets=targets or ("auto",), out=out, device=device, batch_size=batch_size,
                           allow_pickle=allow_pickle, allow_download=allow_download,
                           command=["vizkit", *sys.argv[1:]], **frames, **model_extra)
    with progress(len(images)) as step:
        report = run_gradcam(config, progress=step)
    finish(report)
