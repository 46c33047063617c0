"""``vizkit activations``: each layer's strongest feature maps for each image."""
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
  vizkit activations                              # sample photos -> vizkit-out/<image>/
  vizkit activations cat.jpg --model resnet50 --layer layer2 --layer layer4 --top 16
  vizkit activations digit.png --model lenet5 --weights lenet.pth --scale map
"""


@click.command(epilog=EPILOG)
@image_command
@model_options
@frame_options
@stage_layers_option
@click.option("--top", "-n", default=64, show_default=True, type=click.IntRange(min=1),
              help="Feature maps per layer, strongest first (by max activation, ties by mean).")
@click.option("--scale", type=click.Choice(["shared", "map"]), default="shared", show_default=True,
              help="Colour scale: one per layer page (dark = weak), or each map stretched to its own range.")
@errors_to_exit_codes
def activations(images: tuple[str, ...], model: str | None, weights: str | None, allow_download: bool,
                allow_pickle: bool, layers: tuple[str, ...], top: int, scale: str, out: str, device: str,
                frames: dict[str, Any], model_extra: dict[str, Any]) -> None:
    """Feature-map grids: for each layer, its strongest feature maps for each IMAGE (the sample photos when none
    is given), labelled with channel and maximum.

    Writes OUT/<image>/activations.pdf, activations.npz (input; per layer: channels, maps, max) and
    activations.manifest.json.
    One forward pass per image, stopped after the deepest layer. A bad image is reported and skipped (exit 2).
    A video file writes OUT/<video>/activations.mp4 (each frame beside its maps), .npz (per frame), .pdf (contact
    sheet) and .manifest.json, reading frames as chosen by --every and --max-frames.
    """
    from vizkit.jobs.activations import ActivationsConfig, run_activations
    from vizkit.load import DEFAULT_MODEL, sample_images

    images = images or tuple(str(p) for p in sample_images())
    config = ActivationsConfig(images=images, model=model or DEFAULT_MODEL, weights=weights, layers=layers or None,
                               top=top, scale=scale, out=out, device=device, allow_pickle=allow_pickle,
                               allow_download=allow_download, command=["vizkit", *sys.argv[1:]], **frames,
                               **model_extra)
    with progress(len(images)) as step:
        report = run_activations(config, progress=step)
    finish(report)
