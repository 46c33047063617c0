"""``vizkit occlusion``: a thin click layer over ``vizkit.jobs.occlusion.run_occlusion``."""
from __future__ import annotations

import sys
from typing import Any

import click
from vizkit_cli.common import errors_to_exit_codes, finish, image_command, model_options, progress

EPILOG = """\b
Examples:
  vizkit occlusion                                # sample photos, offline default model
  vizkit occlusion dog.jpg --window 48 --stride 8 --target "Pomeranian"
  vizkit occlusion photo.jpg --model resnet50 --weights my_resnet.pth --layer layer4 --no-sanity
"""


@click.command(epilog=EPILOG)
@image_command
@model_options
@click.option("--layer", "-l", default=None, metavar="L",
              help="Layer whose strongest feature map is watched (model.named_modules() name). Default: the last "
                   "resolution stage (the paper's layer 5).")
@click.option("--window", type=int, default=None, metavar="W",
              help="Occluder side in pixels of the model's input. Default: a seventh of the input side (32 at 224).")
@click.option("--stride", type=int, default=None, metavar="S",
              help="Occluder step in pixels, at most the window. Default: half the window.")
@click.option("--target", "-t", default=None, metavar="T",
              help="The correct class: an index or class name. Default: the top class on the unoccluded image.")
@click.option("--batch", default=64, show_default=True, type=click.IntRange(min=1),
              help="Occluded copies per forward pass (bounds memory; results do not depend on it).")
@click.option("--sanity/--no-sanity", default=True, show_default=True,
              help="Add the sanity-check page (cascading weight randomisation, image dependence).")
@errors_to_exit_codes
def occlusion(images: tuple[str, ...], model: str | None, weights: str | None, allow_download: bool,
              allow_pickle: bool, layer: str | None, window: int | None, stride: int | None, target: str | None,
              batch: int, sanity: bool, out: str, device: str,
              model_extra: dict[str, Any]) -> None:
    """Slide a grey square over each IMAGE (Zeiler & Fergus Fig. 7): activity of the layer's strongest feature map,
    its deconvnet projection, the correct class's probability and the most probable label per occluder position.

    The occluder is filled with 0 in normalised input space: the model's mean pixel. Writes
    OUT/<image>/occlusion.pdf, occlusion.npz, occlusion.sanity.json and occlusion.manifest.json for every IMAGE
    (the sample photos when none is given). A bad image is reported and skipped; the exit code is then 2.
    """
    from vizkit.jobs.occlusion import OcclusionConfig, run_occlusion
    from vizkit.load import DEFAULT_MODEL, sample_images

    images = images or tuple(str(p) for p in sample_images())
    config = OcclusionConfig(images=images, model=model or DEFAULT_MODEL, weights=weights, layer=layer,
                             window=window, stride=stride, target=target, batch=batch, sanity=sanity, out=out,
                             device=device, allow_pickle=allow_pickle, allow_download=allow_download,
                             command=["vizkit", *sys.argv[1:]], **model_extra)
    with progress(len(images)) as step:
        report = run_occlusion(config, progress=step)
    finish(report)
