"""``vizkit mine``: what each unit responds to across a whole dataset (Zeiler-Fergus Fig. 2), resumable, on one
process or many (``torchrun --nproc-per-node N -m vizkit mine ...``)."""
from __future__ import annotations

import os
import sys
from typing import Any

import click
from vizkit_cli.common import (
    allow_skipped_option,
    dataset_progress,
    errors_to_exit_codes,
    exit_code,
    model_options,
    stage_layers_option,
)

EPILOG = """\b
Examples:
  vizkit mine photos/                              # offline default model, top 9 per unit, OUT/mine/
  vizkit mine imagenet/val --model vgg16 --per-class --units top:32 --checkpoint-every 5000
  vizkit mine files.txt --model resnet50 --weights my.pth --layer layer3 --no-project
  vizkit mine photos/ --units top:8 --dream         # beside each unit's top-K: what it wants to see
  vizkit mine imagenet/val --resume               # continue a killed run from OUT/mine/checkpoint.pt
  torchrun --nproc-per-node 4 -m vizkit mine imagenet/val --model vgg16 --device cuda
  vizkit mine imagenet/val --model vgg16 --rank relevance --class "tiger cat"   # what the model uses for a class
"""


@click.command(epilog=EPILOG)
@click.argument("data", type=click.Path(path_type=str))
@model_options
@stage_layers_option
@click.option("--top-k", "-k", default=9, show_default=True, type=click.IntRange(min=1),
              help="Images kept per unit: the K with the largest spatial maximum (of the value before the cap "
                   "in a layer ending in ReLU6 or another saturating activation); at most the number of images.")
@click.option("--batch-size", "-b", default=32, show_default=True, type=click.IntRange(min=1))
@click.option("--workers", default=0, show_default=True, type=click.IntRange(min=0),
              help="DataLoader worker processes that read and preprocess images.")
@click.option("--limit", default=None, type=click.IntRange(min=1), help="Only the first N images of DATA.")
@click.option("--per-class", is_flag=True, help="Also keep the top K per class (DATA/<class>/... subfolders).")
@click.option("--units", default=None, metavar="SPEC",
              help="Units to project and render per layer: all, top:N (the N strongest by mean activation) or "
                   "channels: 5 or 3,7,12 (a bare list always names channels). Default: top:16.")
@click.option("--no-project", is_flag=True,
              help="Stop after the scan: no unit is projected; mine.npz, the manifest and summary pages (mine.pdf, "
                   "html/) without pictures.")
@click.option("--checkpoint-every", default=None, type=click.IntRange(min=1), metavar="N",
              help="Save the scan state to OUT/mine/checkpoint.pt every N images (atomically).")
@click.option("--resume", is_flag=True, help="Continue from OUT/mine/checkpoint.pt (refused if DATA, model, "
                                             "weights or layers changed).")
@click.option("--rank", type=click.Choice(["activation", "relevance"]), default="activation", show_default=True,
              help="Rank each unit's images by its spatial maximum (what it responds to) or by its relevance for "
                   "--class (CRP's RelMax: what the model uses for that class).")
@click.option("--class", "class_", default=None, metavar="C",
              help="With --rank relevance: the class, by index or name (as gradcam's --target).")
@click.option("--dream/--no-dream", default=None,
              help="Also show what each rendered unit wants: an image optimised to excite it (vizkit dream's "
                   "channel objective), beside its top-K. Default: on where a rendered layer's deconvnet "
                   "projections do not depend on the image (the default model), else off.")
@click.option("--dream-steps", default=None, type=click.IntRange(min=1), metavar="N",
              help="Optimisation steps per dream (default 24).")
@click.option("--dream-size", default=None, type=click.IntRange(min=8), metavar="PX",
              help="Dream canvas side in pixels (default 64).")
@click.option("--out", "-o", default="vizkit-out", show_default=True, type=click.Path(file_okay=False),
              help="Output folder; results go to OUT/mine/.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@allow_skipped_option
@errors_to_exit_codes
def mine(data: str, model: str | None, weights: str | None, allow_download: bool, allow_pickle: bool,
         layers: tuple[str, ...], top_k: int, batch_size: int, workers: int, limit: int | None, per_class: bool,
         units: str | None, no_project: bool, checkpoint_every: int | None, resume: bool, rank: str,
         class_: str | None, dream: bool | None, dream_steps: int | None, dream_size: int | None, out: str, device: str,
         model_extra: dict[str, Any]) -> None:
    """For every unit of the chosen layers, the K images of DATA that excite it most, with their deconvnet
    projections (Zeiler-Fergus Fig. 2).

    DATA is a folder (read recursively in sorted order; first-level subfolders are classes) or a text file with
    one image path per line. Writes OUT/mine/: mine.npz, mine.pdf, html/index.html and mine.manifest.json. An
    unreadable image is named on one line and skipped; the run goes on and exits 2 at the end.
    """
    from vizkit.jobs.mine import MineConfig, run_mine
    from vizkit.load import DEFAULT_MODEL

    config = MineConfig(data=data, model=model or DEFAULT_MODEL, weights=weights, layers=layers or None,
                        top_k=top_k, batch_size=batch_size, workers=workers, limit=limit, per_class=per_class,
                        units=units, project=not no_project, checkpoint_every=checkpoint_every, resume=resume,
                        rank=rank, target=class_,
                        dream=dream, dream_steps=dream_steps, dream_size=dream_size,
                        out=out, device=device, allow_pickle=allow_pickle, allow_download=allow_download,
                        command=["vizkit", *sys.argv[1:]], **model_extra)
    main_rank = os.environ.get("RANK", "0") == "0"  # under torchrun only rank 0 draws the progress bar
    with dataset_progress(show=main_rank) as (step, skipped):
        report = run_mine(config, progress=step, on_skip=skipped)
    for folder in report.written:
        click.echo(f"wrote {folder}/")
    if report.result is not None:
        result = report.result
        click.echo(f"{result.images_scanned} images scanned, {len(result.skipped)} skipped"
                   + (" (listed in mine.manifest.json)" if result.skipped else ""), err=bool(result.skipped))
    sys.exit(exit_code(report))
