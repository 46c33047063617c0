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
  vizkit shortcuts data/ --model m.pt --method gradcam --layer layer4 --clusters 3
"""


@click.command(epilog=EPILOG)
@click.argument("data", type=click.Path(path_type=str))
@model_options
@click.option("--class", "-c", "only_classes", multiple=True, metavar="C",
              help="Only this class (name or index of the model); repeatable. Default: every class present.")
@click.option("--method", default="gradxinput", show_default=True,
              type=click.Choice(["gradxinput", "gradcam", "guided-gradcam", "guided-backprop"]),
              help="Attribution map per image (gradxinput: input-level, positive part of gradient x input).")
@click.option("--layer", "-l", default=None, metavar="L",
              help="Layer for gradcam / guided-gradcam. Default: the last spatial feature layer.")
@click.option("--clusters", default="auto", show_default=True, metavar="auto|N",
              help="Clusters per class: from the eigengap, or N.")
@click.option("--batch-size", "-b", default=32, show_default=True, type=click.IntRange(min=1))
@click.option("--limit", default=None, type=click.IntRange(min=1), help="Only the first N images of DATA.")
@click.option("--out", "-o", default="vizkit-out", show_default=True, type=click.Path(file_okay=False),
              help="Output folder; results go to OUT/shortcuts/.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@allow_skipped_option
@errors_to_exit_codes
def shortcuts(data: str, model: str | None, weights: str | None, allow_download: bool, allow_pickle: bool,
              only_classes: tuple[str, ...], method: str, layer: str | None, clusters: str, batch_size: int,
              limit: int | None, out: str, device: str, model_extra: dict[str, Any]) -> None:
    """Find Clever-Hans shortcuts: cluster each class's attribution maps (SpRAy) and rank the classes by how
    much one cluster's evidence sits in one small, fixed place.

    DATA is a folder (first-level subfolders are classes: a class name of the model or a class index; without
    folders the predicted class is used) or a text file with one image path per line. Writes OUT/shortcuts/:
    shortcuts.json, shortcuts.npz, shortcuts.pdf, html/index.html, shortcuts.manifest.json. An unreadable image
    is named on one line and skipped; the run goes on and exits 2 at the end.
    """
    from vizkit.jobs.shortcuts import ShortcutsConfig, run_shortcuts
    from vizkit.load import DEFAULT_MODEL

    config = ShortcutsConfig(data=data, model=model or DEFAULT_MODEL, weights=weights, only_classes=only_classes,
                             method=method, layer=layer, clusters=clusters, batch_size=batch_size, limit=limit,
                             out=out, device=device, allow_pickle=allow_pickle, allow_download=allow_download,
                             command=["vizkit", *sys.argv[1:]], **model_extra)
    with dataset_progress() as (step, skipped):
        report = run_shortcuts(config, progress=step, on_skip=skipped)
    for folder in report.written:
        click.echo(f"wrote {folder}/")
    if report.result is not None:
        for a in report.result.classes[:5]:
            click.echo(f"class {a.class_index} {a.name}: suspicion {a.suspicion:.4f}"
                       + (" (flagged: a compact cluster)" if a.flagged else ""))
    sys.exit(exit_code(report))
