"""``vizkit evolve``: a thin click layer over ``vizkit.jobs.evolve.run_evolve``."""
from __future__ import annotations

import sys
from typing import Any

import click
from vizkit_cli.common import allow_skipped_option, errors_to_exit_codes, finish, model_options

EPILOG = """\b
Examples:
  vizkit evolve runs/ckpt/ --data val_images/ --model resnet18
  vizkit evolve epoch_1.pt epoch_5.pt epoch_20.pt --data val.txt --model lenet5 --units 0,3,5 --patches
  vizkit evolve LAB/checkpoints --data LAB/test --model labnet --layer features.3 --units all --top-k 5
"""


@click.command(epilog=EPILOG)
@click.argument("checkpoints", nargs=-1, required=True, type=click.Path(path_type=str))
@click.option("--data", "-d", required=True, type=click.Path(exists=True, path_type=str),
              help="Image folder (recursive, sorted) or a text file with one image path per line.")
@model_options
@click.option("--layer", "-l", "layers", multiple=True, metavar="L",
              help="Layer name from model.named_modules() (repeatable). Default: one per resolution stage.")
@click.option("--units", default="top:8", show_default=True, metavar="SPEC",
              help="Units per layer shown as rows: all, top:N (the N strongest by mean activation at the last "
                   "checkpoint) or channels: 5 or 3,7,12 (a bare list always names channels).")
@click.option("--top-k", "-k", default=1, show_default=True, type=click.IntRange(min=1),
              help="Images kept per unit and checkpoint (the top-K set stability uses them; the top-1 is projected).")
@click.option("--patches", is_flag=True, help="Show the image patch beside each projection.")
@click.option("--batch-size", default=32, show_default=True, type=click.IntRange(min=1), help="Images per forward.")
@click.option("--limit", default=None, type=click.IntRange(min=1), help="Scan only the first N images of DATA.")
@click.option("--out", "-o", default="vizkit-out", show_default=True, type=click.Path(file_okay=False),
              help="Output folder; results go to OUT/evolve/.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@allow_skipped_option
@errors_to_exit_codes
def evolve(checkpoints: tuple[str, ...], data: str, model: str | None, weights: str | None, allow_download: bool,
           allow_pickle: bool, layers: tuple[str, ...], units: str, top_k: int, patches: bool, batch_size: int,
           limit: int | None, out: str, device: str, model_extra: dict[str, Any]) -> None:
    """How the features of a training run formed (Zeiler & Fergus Fig. 4): for every CHECKPOINT (weight files or
    folders of them) the dataset scan of 'vizkit mine' and the deconvnet projection of each unit's strongest
    activation, side by side in training order, with trends (filter RMS, dead units, mean activation, stability).

    Checkpoints are ordered by the epoch/step number in their file names, else by modification time (the output
    says which). One that cannot be loaded is skipped with one line; the run goes on and exits 2. Writes
    OUT/evolve/evolve.pdf, evolve.npz, html/index.html and evolve.manifest.json.
    """
    from vizkit.jobs.evolve import EvolveConfig, run_evolve
    from vizkit.load import DEFAULT_MODEL
    from vizkit.outputs.progress import note

    if weights is not None:
        raise click.UsageError("--weights does not apply: the CHECKPOINTs are the weights")
    config = EvolveConfig(checkpoints=checkpoints, data=data, model=model or DEFAULT_MODEL, layers=layers or None,
                          units=units, top_k=top_k, patches=patches, batch_size=batch_size, limit=limit, out=out,
                          device=device, allow_pickle=allow_pickle, allow_download=allow_download,
                          command=["vizkit", *sys.argv[1:]], **model_extra)
    finish(run_evolve(config, progress=note))
