"""``vizkit filters``: convolution filters as pictures, per-filter RMS, dead and dominant filters."""
from __future__ import annotations

import sys
from typing import Any

import click
from vizkit_cli.common import errors_to_exit_codes, finish, model_options

EPILOG = """\b
Examples:
  vizkit filters                                  # offline default model -> vizkit-out/filters/
  vizkit filters --model lenet5 --weights lenet.pth --out results
  vizkit filters --model resnet50 --layer conv1 --layer layer4.2.conv2 --radius 0.05
"""


@click.command(epilog=EPILOG)
@model_options
@click.option("--layer", "-l", "layers", multiple=True, metavar="L",
              help="Conv2d name from model.named_modules() (repeatable). Default: every Conv2d in the statistics, "
                   "picture pages for the first conv and the rest spread over the depth (see --max-pages).")
@click.option("--radius", default=0.1, show_default=True, type=click.FloatRange(min=0, min_open=True),
              help="Filters whose RMS exceeds this are flagged dominant (Zeiler & Fergus renormalise to 0.1).")
@click.option("--max-pages", default=9, show_default=True, type=click.IntRange(min=1),
              help="Layer picture pages when no --layer is given (the first conv always among them).")
@click.option("--out", "-o", default="vizkit-out", show_default=True, type=click.Path(file_okay=False),
              help="Output folder; the results go to OUT/filters/.")
@errors_to_exit_codes
def filters(model: str | None, weights: str | None, allow_download: bool, allow_pickle: bool,
            layers: tuple[str, ...], radius: float, max_pages: int, out: str,
            model_extra: dict[str, Any]) -> None:
    """Show the learned filters: first-layer filters as RGB (or grey) tiles, deeper layers as kernel-norm maps,
    every filter's RMS with dead and dominant filters flagged.

    Writes OUT/filters/filters.pdf, filters.npz (per layer: rms, dead, dominant, weights) and filters.manifest.json.
    Dead: RMS 0 or below 1e-3 x the layer median. Dominant: RMS above --radius.
    """
    from vizkit.jobs.filters import FiltersConfig, run_filters
    from vizkit.load import DEFAULT_MODEL

    config = FiltersConfig(model=model or DEFAULT_MODEL, weights=weights, layers=layers or None, radius=radius,
                           max_pages=max_pages, out=out, allow_pickle=allow_pickle, allow_download=allow_download,
                           command=["vizkit", *sys.argv[1:]], **model_extra)
    finish(run_filters(config))
