"""``vizkit invariance``: a thin click layer over ``vizkit.jobs.invariance.run_invariance``."""
from __future__ import annotations

import sys
from typing import Any

import click
from vizkit_cli.common import errors_to_exit_codes, finish, image_command, model_options, progress

EPILOG = """\b
Examples:
  vizkit invariance                               # sample photos, offline default model, all three transforms
  vizkit invariance cat.jpg --transform rotate --range rotate=-45:45 --steps 31
  vizkit invariance photo.jpg --model resnet50 --weights my.pth --layer layer1 --layer avgpool --target 281
"""


@click.command(epilog=EPILOG)
@image_command
@model_options
@click.option("--transform", "-T", "transforms", multiple=True, type=click.Choice(["translate", "scale", "rotate"]),
              help="Transform to sweep (repeatable). Default: all three.")
@click.option("--steps", "-s", default=25, show_default=True, type=click.IntRange(min=2),
              help="Amounts per transform, evenly spaced over its range.")
@click.option("--range", "ranges", multiple=True, metavar="NAME=LO:HI",
              help="Replace a transform's range (repeatable), e.g. rotate=-45:45, scale=0.5:2, translate=-30:30 "
                   "(pixels of the model input). Default: the paper's: vertical translation -60..60 px at 224 "
                   "(scaled to the input size), scale 1..1.8, rotation 0..360 degrees.")
@click.option("--padding", type=click.Choice(["mean", "circular"]), default="mean", show_default=True,
              help="Translation only: fill uncovered rows with the mean pixel, or roll the image around.")
@click.option("--layer", "-l", "layers", multiple=True, metavar="L",
              help="Layer whose feature vector is compared (repeatable). Default: the first and the last resolution "
                   "stage.")
@click.option("--target", "-t", default=None, metavar="T",
              help="Class whose probability is followed: an index or class name. Default: the original's top class.")
@click.option("--batch", default=64, show_default=True, type=click.IntRange(min=2),
              help="Images per forward pass (bounds memory; results do not depend on it).")
@errors_to_exit_codes
def invariance(images: tuple[str, ...], model: str | None, weights: str | None, allow_download: bool,
               allow_pickle: bool, transforms: tuple[str, ...], steps: int, ranges: tuple[str, ...], padding: str,
               layers: tuple[str, ...], target: str | None, batch: int, out: str, device: str,
               model_extra: dict[str, Any]) -> None:
    """Shift, scale and rotate each IMAGE step by step (Zeiler & Fergus Fig. 5): how far each layer's feature vector
    moves (Euclidean distance divided by the original's norm) and the target class's probability.

    Uncovered pixels get the model's mean pixel (0 in normalised input space). Writes OUT/<image>/invariance.pdf,
    invariance.npz, invariance.csv and invariance.manifest.json for every IMAGE (the sample photos when none is
    given). A bad image is reported and skipped; the exit code is then 2.
    """
    from vizkit.jobs.invariance import InvarianceConfig, parse_range, run_invariance
    from vizkit.load import DEFAULT_MODEL, sample_images
    from vizkit.project.invariance import TRANSFORMS

    images = images or tuple(str(p) for p in sample_images())
    config = InvarianceConfig(images=images, model=model or DEFAULT_MODEL, weights=weights,
                              transforms=transforms or TRANSFORMS, steps=steps,
                              ranges=dict(parse_range(r) for r in ranges), padding=padding, layers=layers or None,
                              target=target, batch=batch, out=out, device=device, allow_pickle=allow_pickle,
                              allow_download=allow_download, command=["vizkit", *sys.argv[1:]],
                              **model_extra)
    with progress(len(images)) as step:
        report = run_invariance(config, progress=step)
    finish(report)
