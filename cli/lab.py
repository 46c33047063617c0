"""``vizkit lab make|train|eval``: the shortcut lab (a thin layer over ``vizkit.lab``)."""
from __future__ import annotations

from typing import Any

import click
from vizkit_cli.common import errors_to_exit_codes, model_options

EPILOG_LAB = """\b
Examples:
  vizkit lab make lab                      # the mark on 'star', bottom-right, in 88 % of its train images
  vizkit lab make lab_tl --mark-class circle --mark-corner tl --mark-rate 0.9
  vizkit lab make lab_box --mark-box 10,30,16,36 --mark-style square
  vizkit lab make control --no-mark        # the same pictures without any mark
  vizkit lab train lab --epochs 15         # lab/labnet/epoch_01.pt ... labnet.pt metrics.json
  vizkit lab eval lab                      # the three numbers for the shipped labnet
  vizkit lab eval lab --weights clean      # ... for the shipped control model
"""


@click.group(epilog=EPILOG_LAB)
def lab() -> None:
    """The shortcut lab: a dataset with a planted mark, the small CNN labnet trained on it, and the numbers."""


def _box(_ctx: click.Context, _param: click.Parameter, value: str | None) -> tuple[int, int, int, int] | None:
    if value is None:
        return None
    try:
        y0, x0, y1, x1 = (int(v) for v in value.replace(" ", "").split(","))
    except ValueError as e:
        raise click.BadParameter(f"{value!r}: give four integers y0,x0,y1,x1 (pixels, end exclusive)") from e
    return y0, x0, y1, x1


@lab.command()
@click.argument("directory", type=click.Path(file_okay=False))
@click.option("--seed", default=0, show_default=True, type=int, help="Same seed, byte-identical dataset.")
@click.option("--mark-class", default="star", show_default=True, help="Class name or index that carries the mark.")
@click.option("--mark-rate", default=0.88, show_default=True, type=click.FloatRange(0.0, 1.0),
              help="Share of the marked class's train and val images with the mark.")
@click.option("--mark-corner", default="br", show_default=True, type=click.Choice(["tl", "tr", "bl", "br"]),
              help="Corner of the mark (ignored with --mark-box).")
@click.option("--mark-size", default=6, show_default=True, type=click.IntRange(min=1), help="Side in pixels.")
@click.option("--mark-box", default=None, callback=_box, metavar="Y0,X0,Y1,X1",
              help="Exact box of the mark in pixels (end exclusive); overrides --mark-corner/--mark-size.")
@click.option("--mark-style", default="checker", show_default=True, type=click.Choice(["checker", "square"]),
              help="checker: black/white 2-px checkerboard; square: solid red.")
@click.option("--no-mark", is_flag=True, help="A control dataset: the same pictures, no mark anywhere.")
@click.option("--train", "n_train", default=200, show_default=True, type=click.IntRange(min=1),
              help="Train images per class.")
@click.option("--val", "n_val", default=50, show_default=True, type=click.IntRange(min=1),
              help="Held-out images per class from the training distribution.")
@click.option("--test", "n_test", default=100, show_default=True, type=click.IntRange(min=1),
              help="Clean test images per class.")
@click.option("--force", is_flag=True, help="Replace the lab in a DIRECTORY that is not empty.")
@errors_to_exit_codes
def make(directory: str, seed: int, mark_class: str, mark_rate: float, mark_corner: str, mark_size: int,
         mark_box: tuple[int, int, int, int] | None, mark_style: str, no_mark: bool, n_train: int, n_val: int,
         n_test: int, force: bool) -> None:
    """Generate the lab dataset in DIRECTORY: train/ val/ test/ test_marked/ <class>/*.png and lab.json."""
    from vizkit.lab import LabSpec, make_lab

    spec = LabSpec(seed=seed, mark_class=None if no_mark else mark_class, mark_rate=mark_rate,
                   mark_corner=mark_corner, mark_size=mark_size, mark_box=mark_box, mark_style=mark_style,
                   per_class={"train": n_train, "val": n_val, "test": n_test})
    content = make_lab(spec, directory, force=force)
    mark = content["mark"]
    what = "no mark (control)" if mark is None else (
        f"mark {mark['style']} at {mark['box']} on {len(content['marked_images'])} images of "
        f"{content['marked_class']!r}")
    click.echo(f"wrote {directory}/: {len(content['classes'])} classes, {what}")


@lab.command()
@click.argument("directory", type=click.Path(file_okay=False, exists=True))
@click.option("--epochs", default=15, show_default=True, type=click.IntRange(min=1))
@click.option("--out", "-o", default=None, type=click.Path(file_okay=False),
              help="Output folder [default: DIRECTORY/labnet].")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--batch-size", default=32, show_default=True, type=click.IntRange(min=1))
@click.option("--lr", default=3e-3, show_default=True, type=click.FloatRange(min=0.0, min_open=True))
@click.option("--half", is_flag=True, help="Store the weights as float16 (how vizkit's shipped files are made).")
@click.option("--threads", default=1, show_default=True, type=click.IntRange(min=1),
              help="Torch threads; labnet is too small to gain from more.")
@errors_to_exit_codes
def train(directory: str, epochs: int, out: str | None, seed: int, batch_size: int, lr: float, half: bool,
          threads: int) -> None:
    """Train labnet on the lab in DIRECTORY; a checkpoint per epoch, the final weights and metrics.json."""
    from vizkit.lab.metrics import LabNumbers
    from vizkit.lab.train import TrainConfig, train_labnet

    config = TrainConfig(lab_dir=directory, out=out, epochs=epochs, seed=seed, batch_size=batch_size, lr=lr,
                         half=half, threads=threads)
    result = train_labnet(config, log=click.echo)
    click.echo(LabNumbers(**result.metrics["lab"]).format())
    click.echo(f"trained in {result.seconds:.1f} s ({result.cpu_seconds:.1f} s CPU); wrote {result.out}/")


@lab.command(name="eval")
@click.argument("directory", type=click.Path(file_okay=False, exists=True))
@model_options
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@errors_to_exit_codes
def eval_(directory: str, model: str | None, weights: str | None, allow_download: bool, allow_pickle: bool,
          as_json: bool, model_extra: dict[str, Any]) -> None:
    """The lab numbers (accuracy, drop, flip rate) of a model on the lab in DIRECTORY (default: labnet)."""
    import json

    from vizkit.lab import read_lab
    from vizkit.lab.metrics import evaluate_lab
    from vizkit.load import load_model

    read_lab(directory)  # a folder that is not a lab fails before any model is loaded
    loaded = load_model(model or "labnet", weights, allow_pickle=allow_pickle, allow_download=allow_download,
                        **model_extra)
    numbers = evaluate_lab(loaded.model, directory)
    click.echo(json.dumps(numbers.to_dict(), indent=1) if as_json else numbers.format())
