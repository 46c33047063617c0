"""``vizkit report``: a thin click layer over ``vizkit.jobs.report.run_report``."""
from __future__ import annotations

import sys
from typing import Any

import click
from vizkit_cli.common import errors_to_exit_codes, finish, image_command, model_options, progress, stage_layers_option


@click.command()
@image_command
@model_options
@stage_layers_option
@click.option("--top-k", "-k", default=9, show_default=True, type=click.IntRange(min=1),
              help="Feature maps per layer in the deconvnet pages.")
@click.option("--method", "-M", "methods", multiple=True, metavar="M",
              help="Also show these attribution methods (the names of 'vizkit attribute'); repeatable.")
@click.option("--dream/--no-dream", default=None,
              help="Dream images of each layer's ranked units and the top class. Default: on when the "
                   "projections do not depend on the image (no max-pools; the default model).")
@errors_to_exit_codes
def report(images: tuple[str, ...], model: str | None, weights: str | None, allow_download: bool,
           allow_pickle: bool, layers: tuple[str, ...], top_k: int, methods: tuple[str, ...], dream: bool | None,
           out: str, device: str, model_extra: dict[str, Any]) -> None:
    """Every analysis of each IMAGE in one PDF with contents, and a static HTML gallery.

    Writes OUT/<image>/report.pdf, html/index.html (open it from disk; no server needed), deconv.npz and
    report.manifest.json. A bad image is reported and skipped; the exit code is then 2.
    """
    from vizkit.jobs.report import ReportConfig, run_report
    from vizkit.load import DEFAULT_MODEL, sample_images

    images = images or tuple(str(p) for p in sample_images())
    config = ReportConfig(images=images, model=model or DEFAULT_MODEL, weights=weights, layers=layers or None,
                          top_k=top_k, methods=methods, dream=dream, out=out, device=device, allow_pickle=allow_pickle,
                          allow_download=allow_download, command=["vizkit", *sys.argv[1:]], **model_extra)
    with progress(len(images)) as step:
        finish(run_report(config, progress=step))
