"""``vizkit deconv``: a thin click layer over ``vizkit.jobs.deconv.run_deconv``."""
from __future__ import annotations

import sys
from typing import Any

import click
from vizkit_cli.common import (
    errors_to_exit_codes,
    finish,
    frame_options,
    image_command,
    model_options,
    progress,
    stage_layers_option,
)

EPILOG = """\b
Examples:
  vizkit deconv                                   # sample photos, offline default model
  vizkit deconv cat.jpg dog.png --out results
  vizkit deconv lab/test/star/test_star_0000.png --model labnet   # after 'vizkit lab make lab'
  vizkit deconv photo.jpg --model resnet50 --weights my_resnet.pth --layer layer3 --layer layer4
  vizkit deconv photo.jpg --model timm:convnext_tiny --weights none --mode map --top-k 4
"""


@click.command(epilog=EPILOG)
@image_command
@model_options
@frame_options
@stage_layers_option
@click.option("--top-k", "-k", default=9, show_default=True, type=click.IntRange(min=1),
              help="Feature maps per layer, ranked by their strongest activation.")
@click.option("--mode", type=click.Choice(["max", "map"]), default="max", show_default=True,
              help="max: project only each map's strongest activation (the paper); map: the whole feature map.")
@click.option("--no-crop", is_flag=True, help="Always back-propagate over the whole image (slower, same result).")
@click.option("--engine", type=click.Choice(["autograd", "explicit"]), default="autograd", show_default=True,
              help="autograd: back-propagation with the deconvnet rules (any graph). explicit: the paper's layer-by-"
                   "layer deconvnet unpooling with the recorded switches (chain models such as VGG, AlexNet, ZFNet, "
                   "LeNet-5); the same numbers.")
@click.option("--save-switches", is_flag=True,
              help="Also write the max-pool switches to deconv.npz (switches/<pool name>).")
@errors_to_exit_codes
def deconv(images: tuple[str, ...], model: str | None, weights: str | None, allow_download: bool,
           allow_pickle: bool, layers: tuple[str, ...], top_k: int, mode: str, out: str, device: str,
           no_crop: bool, engine: str, save_switches: bool, frames: dict[str, Any],
           model_extra: dict[str, Any]) -> None:
    """Project the strongest feature maps of each layer back to pixels (Zeiler-Fergus deconvnet).

    Writes OUT/<image>/deconv.pdf, deconv.npz and manifest.json for every IMAGE (the sample photos when none is
    given). A bad image is reported and skipped; the exit code is then 2. A video file writes OUT/<video>/deconv.mp4
    (each frame beside its projections), .npz (per frame), .pdf (contact sheet) and .manifest.json, reading frames as
    chosen by --every and --max-frames.
    """
    from vizkit.jobs.deconv import DeconvConfig, run_deconv
    from vizkit.load import DEFAULT_MODEL, sample_images

    images = images or tuple(str(p) for p in sample_images())
    config = DeconvConfig(images=images, model=model or DEFAULT_MODEL, weights=weights, layers=layers or None,
                          top_k=top_k, mode=mode, out=out, device=device, allow_pickle=allow_pickle,
                          allow_download=allow_download, crop=not no_crop, engine=engine,
                          save_switches=save_switches, command=["vizkit", *sys.argv[1:]], **frames, **model_extra)
    with progress(len(images)) as step:
        report = run_deconv(config, progress=step)
    finish(report)
