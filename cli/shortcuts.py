"""``vizkit shortcuts``: SpRAy over a dataset, a thin click layer over ``vizkit.jobs.shortcuts.run_shortcuts``."""
from __future__ import annotations

import sys
from typing import Any

import click
from vizkit_cli.common import allow_skipped_option, dataset_progress, errors_to_exit_codes, exit_code, model_options

EPILOG = """\b
Examples:
  vizkit shortcuts lab/test --model labnet            # folders by class; OUT/shortcuts/
  vizkit shortcuts photos/ --model resnet50 --class 'tiger cat' --class 281
  vizkit shortcuts data/ --model m.pt --method lrp --composite epsilon-plus --tcav-runs 10
  vizkit shortcuts data/ --model m.pt --method gradcam --layer layer4 --clusters 3
"""


@click.command(epilog=EPILOG)
@click.argument("data", type=click.Path(path_type=str))
@model_options
@click.option("--class", "-c", "only_classes", multiple=True, metavar="C",
              help="Only this class (name or index of the model); repeatable. Default: every class present.")
@click.option("--method", default=None,
              type=click.Choice(["gradient-x-input", "lrp", "gradcam", "guided-gradcam", "guided-backprop",
                                 "gradxinput"]),
              help="Attribution map per image. Default: the one the verdict was fitted with on the lab family "
                   "(gradient-x-input; gradxinput is its old name).")
@click.option("--composite", default="epsilon-plus-flat", show_default=True, metavar="NAME",
              help="zennit composite for --method lrp (epsilon-plus-flat, epsilon-plus, epsilon-alpha2-beta1, "
                   "epsilon-alpha2-beta1-flat, epsilon-gamma-box).")
@click.option("--layer", "-l", default=None, metavar="L",
              help="Layer for gradcam / guided-gradcam and TCAV. Default: the last spatial feature layer.")
@click.option("--clusters", default="auto", show_default=True, metavar="auto|N",
              help="Clusters per class: from the eigengap, or N (at most one per 3 images of the class).")
@click.option("--tcav-runs", default=0, show_default=True, type=click.IntRange(min=0),
              help="TCAV (Captum) of each detailed class's top cluster against N random concepts, with Kim et "
                   "al.'s t-test; 0: no TCAV.")
@click.option("--thresholds", default=None, type=click.Path(dir_okay=False),
              help="A thresholds.json of your own (vizkit.lab.fit). Default: the shipped one.")
@click.option("--batch-size", "-b", default=32, show_default=True, type=click.IntRange(min=1))
@click.option("--limit", default=None, type=click.IntRange(min=1), help="Only the first N images of DATA.")
@click.option("--out", "-o", default="vizkit-out", show_default=True, type=click.Path(file_okay=False),
              help="Output folder; results go to OUT/shortcuts/.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@allow_skipped_option
@errors_to_exit_codes
def shortcuts(data: str, model: str | None, weights: str | None, allow_download: bool, allow_pickle: bool,
              only_classes: tuple[str, ...], method: str | None, composite: str, layer: str | None, clusters: str,
              tcav_runs: int, thresholds: str | None, batch_size: int, limit: int | None, out: str, device: str,
              model_extra: dict[str, Any]) -> None:
    """Find Clever-Hans shortcuts: cluster each class's attribution maps (SpRAy), then judge each cluster's
    region by its evidence (pasted on other classes' images, does it pull them to the class? does deleting it cost
    the class? is it one pattern?) and rank the classes by suspicion.

    DATA is a folder (first-level subfolders are classes: a class name of the model or a class index; without
    folders the predicted class is used) or a text file with one image path per line. Writes OUT/shortcuts/:
    shortcuts.json, shortcuts.npz, shortcuts.pdf, html/index.html, shortcuts.manifest.json. An unreadable image
    is named on one line and skipped; the run goes on and exits 2 at the end.
    """
    from vizkit.jobs.shortcuts import ShortcutsConfig, run_shortcuts
    from vizkit.load import DEFAULT_MODEL
    from vizkit.render.shortcuts_pages import evidence_line

    config = ShortcutsConfig(data=data, model=model or DEFAULT_MODEL, weights=weights, only_classes=only_classes,
                             method=method, composite=composite, layer=layer, clusters=clusters, tcav_runs=tcav_runs,
                             thresholds=thresholds, batch_size=batch_size, limit=limit,
                             out=out, device=device, allow_pickle=allow_pickle, allow_download=allow_download,
                             command=["vizkit", *sys.argv[1:]], **model_extra)
    with dataset_progress() as (step, skipped):
        report = run_shortcuts(config, progress=step, on_skip=skipped)
    for warning in report.warnings:
        click.echo(f"vizkit: warning: {warning}", err=True)
    for folder in report.written:
        click.echo(f"wrote {folder}/")
    if report.result is not None:
        for v in report.result.classes[:5]:
            figures = f" ({evidence_line(report.result, v.top)})" if v.top is not None else ""
            click.echo(f"class {v.class_index} {v.name}: suspicion {v.suspicion:.3f}{' FLAGGED' * v.flagged}{figures}")
    sys.exit(exit_code(report))
