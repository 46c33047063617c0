"""The ``vizkit`` command: a thin click layer over ``vizkit.jobs`` and the library.

Exit codes: 0 success; 2 bad input or usage (unreadable image, unknown model/layer, missing weights; in a batch,
after all other images were processed); 1 internal error.
"""
from __future__ import annotations

import logging
import sys
from typing import Any

import click
from vizkit_cli.activations import activations
from vizkit_cli.common import errors_to_exit_codes, finish, image_command, model_options, progress, stage_layers_option
from vizkit_cli.evolve import evolve
from vizkit_cli.filters import filters
from vizkit_cli.gradcam import gradcam
from vizkit_cli.invariance import invariance
from vizkit_cli.lab import lab
from vizkit_cli.mine import mine
from vizkit_cli.occlusion import occlusion
from vizkit_cli.shortcuts import shortcuts

EPILOG_DECONV = """\b
Examples:
  vizkit deconv                                   # sample photos, offline default model
  vizkit deconv cat.jpg dog.png --out results
  vizkit deconv lab/test/star/test_star_0000.png --model labnet   # after 'vizkit lab make lab'
  vizkit deconv photo.jpg --model resnet50 --weights my_resnet.pth --layer layer3 --layer layer4
  vizkit deconv photo.jpg --model timm:convnext_tiny --weights none --mode map --top-k 4
"""


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.option("--debug", is_flag=True, help="Show tracebacks of internal errors.")
@click.version_option(package_name="vizkit")
def main(debug: bool) -> None:
    """See what a trained convolutional network learned."""
    logging.basicConfig(level=logging.DEBUG if debug else logging.WARNING, format="%(message)s")


@main.command(epilog=EPILOG_DECONV)
@image_command
@model_options
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
           no_crop: bool, engine: str, save_switches: bool, model_extra: dict[str, Any]) -> None:
    """Project the strongest feature maps of each layer back to pixels (Zeiler-Fergus deconvnet).

    Writes OUT/<image>/deconv.pdf, deconv.npz and manifest.json for every IMAGE (the sample photos when none is
    given). A bad image is reported and skipped; the exit code is then 2.
    """
    from vizkit.jobs import DeconvConfig, run_deconv
    from vizkit.load import DEFAULT_MODEL, sample_images

    images = images or tuple(str(p) for p in sample_images())
    config = DeconvConfig(images=images, model=model or DEFAULT_MODEL, weights=weights, layers=layers or None,
                          top_k=top_k, mode=mode, out=out, device=device, allow_pickle=allow_pickle,
                          allow_download=allow_download, crop=not no_crop, engine=engine,
                          save_switches=save_switches, command=["vizkit", *sys.argv[1:]], **model_extra)
    with progress(len(images)) as step:
        report = run_deconv(config, progress=step)
    finish(report)


@main.command()
@image_command
@model_options
@stage_layers_option
@click.option("--top-k", "-k", default=9, show_default=True, type=click.IntRange(min=1),
              help="Feature maps per layer in the deconvnet pages.")
@errors_to_exit_codes
def report(images: tuple[str, ...], model: str | None, weights: str | None, allow_download: bool,
           allow_pickle: bool, layers: tuple[str, ...], top_k: int, out: str, device: str,
           model_extra: dict[str, Any]) -> None:
    """Every analysis of each IMAGE in one PDF with contents, and a static HTML gallery.

    Writes OUT/<image>/report.pdf, html/index.html (open it from disk; no server needed), deconv.npz and
    report.manifest.json. A bad image is reported and skipped; the exit code is then 2.
    """
    from vizkit.jobs.report import ReportConfig, run_report
    from vizkit.load import DEFAULT_MODEL, sample_images

    images = images or tuple(str(p) for p in sample_images())
    config = ReportConfig(images=images, model=model or DEFAULT_MODEL, weights=weights, layers=layers or None,
                          top_k=top_k, out=out, device=device, allow_pickle=allow_pickle,
                          allow_download=allow_download, command=["vizkit", *sys.argv[1:]], **model_extra)
    with progress(len(images)) as step:
        finish(run_report(config, progress=step))


@main.command()
@model_options
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@errors_to_exit_codes
def layers(model: str | None, weights: str | None, allow_download: bool, allow_pickle: bool, as_json: bool,
           model_extra: dict[str, Any]) -> None:
    """Every layer: name, type, output shape, parameters, MACs, receptive field, stride, switches."""
    from vizkit.capture.layer_table import layer_table
    from vizkit.jobs.context import input_shape
    from vizkit.load import DEFAULT_MODEL, load_model

    loaded = load_model(model or DEFAULT_MODEL, weights or "none", allow_pickle=allow_pickle,
                        allow_download=allow_download, **model_extra)
    table = layer_table(loaded.model, input_shape(loaded))
    click.echo(table.to_json() if as_json else table.format())


@main.command()
@errors_to_exit_codes
def models() -> None:
    """List model names (timm models are used as timm:NAME)."""
    from vizkit.load import available_models

    for name in available_models():
        click.echo(name)


for command in (gradcam, filters, activations, occlusion, mine, invariance, evolve, lab, shortcuts):
    main.add_command(command)

if __name__ == "__main__":
    main()
