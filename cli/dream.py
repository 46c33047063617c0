"""``vizkit dream``: a thin click layer over ``vizkit.jobs.dream.run_dream``."""
from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from typing import Any

import click
from vizkit_cli.common import errors_to_exit_codes, finish, model_options

EPILOG = """\b
Examples:
  vizkit dream --class goldfish --class flamingo       # what the default model wants to see for two classes
  vizkit dream --layer blocks.3 --units 0,5,12 --diversity 2
  vizkit dream --layer blocks.4 --units top:8 --data photos/   # the 8 most active units, with their data maximum
  vizkit dream --class 1 --from photo.jpg               # feature accentuation: a plausible edit of the photo
  torchrun --nproc-per-node 4 -m vizkit dream --layer layer3 --units all --model resnet50 --device cuda
"""


class Progress:
    """``objectives done / total, ETA`` on stderr: redrawn in place on a terminal, else one line per finished
    batch and per tenth of the steps (a log file); nothing when ``show`` is False (torchrun ranks > 0)."""

    def __init__(self, show: bool = True) -> None:
        self.show, self.tty = show, sys.stderr.isatty()
        self.started, self.last = time.perf_counter(), (-1, -1)

    def __call__(self, done: int, total: int, fraction: float) -> None:
        now = (done, int(fraction * 10))
        if not self.show or (not self.tty and now == self.last):
            return
        self.last = now
        elapsed = time.perf_counter() - self.started
        eta = f", ETA {_clock(elapsed * (1 - fraction) / fraction)}" if 0 < fraction < 1 else ""
        line = f"dream: {done}/{total} objectives, {fraction:.0%} of the steps, {_clock(elapsed)}{eta}"
        if self.tty:
            click.echo(f"\r{line}\x1b[K", err=True, nl=fraction >= 1)
        else:
            click.echo(line, err=True)


def _clock(seconds: float) -> str:
    m, s = divmod(round(seconds), 60)
    return f"{m}m{s:02d}s" if m else f"{s}s"


def _skipped(show: bool) -> Callable[[str, str], None]:
    def say(path: str, reason: str) -> None:
        if show:
            click.echo(f"vizkit: skipped {path}: {reason}", err=True)

    return say


@click.command(epilog=EPILOG)
@model_options
@click.option("--layer", "-l", "layers", multiple=True, metavar="L",
              help="Layer whose units to visualise (repeatable). Default: the deepest spatial layer, unless "
                   "--class is given.")
@click.option("--units", default=None, metavar="SPEC",
              help="Units of each --layer: channels (5 or 3,7,12), all, or top:N, the N most active over "
                   "--data (as in 'vizkit mine'). Default: top:8 with --data, else channels 0-7.")
@click.option("--class", "targets", multiple=True, metavar="C",
              help="A class to visualise (its pre-softmax logit): index or name; repeatable.")
@click.option("--objective", default="channel", show_default=True, type=click.Choice(["channel", "neuron"]),
              help="channel: a unit's mean activation over the map; neuron: at the centre position.")
@click.option("--method", default="maco", show_default=True, type=click.Choice(["maco", "fourier", "pixel"]),
              help="Parameterisation: MACO (phase only, fixed natural-image spectrum), Fourier (1/f scaled, "
                   "decorrelated colour) or plain pixels.")
@click.option("--steps", default=48, show_default=True, type=click.IntRange(min=1), help="Optimisation steps.")
@click.option("--size", default=None, type=click.IntRange(min=8), metavar="PX",
              help="Canvas size in pixels. Default: the model's input size.")
@click.option("--diversity", default=1, show_default=True, type=click.IntRange(min=1), metavar="N",
              help="Images per objective, pushed apart by a penalty on their Gram matrices (Lucid).")
@click.option("--from", "from_images", multiple=True, metavar="IMAGE", type=click.Path(dir_okay=False),
              help="Feature accentuation: start from IMAGE and stay close to it (one image, or one per objective).")
@click.option("--data", default=None, metavar="DATA", type=click.Path(exists=True),
              help="Images (folder or list file): rank units for top:N and record each objective's largest value "
                   "over them ('reference').")
@click.option("--spectrum-from", default=None, metavar="DATA", type=click.Path(exists=True),
              help="MACO's magnitude spectrum from your own photos (default: the one vizkit ships).")
@click.option("--limit", default=None, type=click.IntRange(min=1), help="Only the first N images of DATA.")
@click.option("--batch-size", "-b", default=8, show_default=True, type=click.IntRange(min=1),
              help="Objectives optimised together in one batch.")
@click.option("--out", "-o", default="vizkit-out", show_default=True, type=click.Path(file_okay=False),
              help="Output folder; results go to OUT/dream/.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@errors_to_exit_codes
def dream(model: str | None, weights: str | None, allow_download: bool, allow_pickle: bool,
          layers: tuple[str, ...], units: str | None, targets: tuple[str, ...], objective: str, method: str,
          steps: int, size: int | None, diversity: int, from_images: tuple[str, ...], data: str | None,
          spectrum_from: str | None, limit: int | None, batch_size: int, out: str, device: str,
          model_extra: dict[str, Any]) -> None:
    """Images optimised to excite units or classes of the model: what each one wants to see (feature
    visualisation, Olah et al. 2017; MACO, Fel et al. 2023), many objectives per batch.

    Writes OUT/dream/: dream.npz, dream.pdf, html/index.html and dream.manifest.json. --seed seeds the starts
    and the random views (and, as everywhere, a random-init model).
    """
    from vizkit.jobs.dream import DreamConfig, run_dream
    from vizkit.load import DEFAULT_MODEL

    config = DreamConfig(model=model or DEFAULT_MODEL, weights=weights, layers=layers or None, units=units,
                         targets=targets, objective=objective, method=method, steps=steps, size=size,
                         diversity=diversity, from_images=from_images, data=data, spectrum_from=spectrum_from,
                         limit=limit, batch_size=batch_size, out=out, device=device, allow_pickle=allow_pickle,
                         allow_download=allow_download, command=["vizkit", *sys.argv[1:]], **model_extra)
    show = os.environ.get("RANK", "0") == "0"
    finish(run_dream(config, progress=Progress(show), on_skip=_skipped(show)))
