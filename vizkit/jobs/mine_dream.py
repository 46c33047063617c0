"""``vizkit mine --dream``: what each rendered unit wants to see, beside its top-K patches (OpenAI Microscope's view).

For every layer, the rendered units' channel objectives (mean activation) are optimised together by
``vizkit.project.dream.dream``: every batch element has its own unit, so a layer of U units takes
``ceil(U / batch_size)`` optimisations. The defaults are small (``MINE_DREAM``: a 64 px Fourier canvas, 24 steps,
one view per step) so that 80 units stay practical on a CPU; ``--dream-steps`` and ``--dream-size`` buy quality
with time. ``--dream`` is on by default where a rendered layer's deconvnet projections do not depend on the image
(``dream_reason``): there the projections all show one pattern per unit, and the dream is the picture that says
what the unit wants; ``--no-dream`` turns it off. The model sees the canvas at its own size, which a convolutional
layer takes whatever the input size; where the layer needs the model's input size (a flatten before it), the views
are resized to it.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from vizkit.capture.recorder import Recorder
from vizkit.capture.state import preserve_model_state
from vizkit.errors import UserInputError
from vizkit.load.preprocessing import Preprocessing
from vizkit.outputs.progress import task as progress_task
from vizkit.project.dream import DreamSettings, TransformSettings, channel, dream
from vizkit.project.results import LayerDreams

if TYPE_CHECKING:
    from vizkit.jobs.context import RunContext
    from vizkit.jobs.mine import MineConfig
    from vizkit.outputs.progress import Task
    from vizkit.project.mine_projection import UnitTopProjections

log = logging.getLogger("vizkit")

#: mine's dream settings: Lucid's Fourier parameterisation with decorrelated colour, small and short enough for a
#: CPU (measured in docs/commands/mine.md); the views the model sees are the canvas itself.
MINE_DREAM = DreamSettings(method="fourier", steps=24, size=64, batch_size=16, progressive=None,
                           transforms=TransformSettings(crops=1, pad=4, jitter=4))


def mine_dream_settings(steps: int | None = None, size: int | None = None, seed: int = 0) -> DreamSettings:
    """``MINE_DREAM`` with the user's ``--dream-steps``/``--dream-size`` and the run's seed."""
    return replace(MINE_DREAM, steps=steps or MINE_DREAM.steps, size=size or MINE_DREAM.size, seed=seed)


def runs_at(model: nn.Module, layer: str, size: int) -> bool:
    """Whether the model's forward reaches ``layer`` on a ``size`` px input (False: a layer before it, such as a
    Linear after a flatten, needs the model's own input size)."""
    device = next(model.parameters(), torch.empty(0)).device
    with preserve_model_state(model), torch.no_grad(), Recorder(model, [layer], stop=True) as rec:
        try:
            rec.run(torch.zeros(1, 3, size, size, device=device))
        except RuntimeError:
            return False
    return True


def check_dream(asked: bool | None, channels: int) -> None:
    """Refuse ``--dream`` before the scan for a model that does not take RGB images (a dream is an RGB canvas)."""
    if asked and channels != 3:
        raise UserInputError(f"--dream makes RGB images, and this model takes {channels}-channel input; "
                             "drop --dream")


def dream_reason(asked: bool | None, independent: Sequence[str], channels: int = 3) -> str | None:
    """Why the run dreams (None: it does not): ``asked`` is ``--dream`` (True), ``--no-dream`` (False) or neither
    (None: on where a rendered layer's projections do not depend on the image, ``independent``, and the model takes
    RGB input, ``channels``)."""
    if asked is not None:
        return "asked (--dream)" if asked else None
    if not independent or channels != 3:
        return None
    return (f"on by default: the deconvnet projections of {', '.join(independent)} do not depend on the image "
            "(--no-dream turns it off)")


def dream_units(model: nn.Module, prep: Preprocessing, units: Sequence[tuple[str, int]],
                settings: DreamSettings = MINE_DREAM, progress: Callable[[int, int], None] | None = None
                ) -> dict[str, LayerDreams]:
    """Each (layer, channel)'s dream, one batched optimisation per layer (the forward stops at that layer);
    ``progress(done, total)`` in optimisation steps; on stderr (under the CLI's reporter) units done / total, a
    batch of units counted when its optimisation ends. The model is left exactly as it was."""
    by_layer: dict[str, list[int]] = {}
    for layer, ch in units:
        by_layer.setdefault(layer, []).append(int(ch))
    total = sum(settings.steps * -(-len(chs) // settings.batch_size) for chs in by_layer.values())
    done = 0
    out: dict[str, LayerDreams] = {}
    shown = progress_task("dream", len(units), "units")
    with shown:
        for layer, channels in by_layer.items():
            tick = _ticker(progress, shown, layer, len(channels), settings, done, total)
            out[layer] = _dream_layer(model, prep, layer, channels, settings, tick)
            done += settings.steps * -(-len(channels) // settings.batch_size)
    return out


def _ticker(progress: Callable[[int, int], None] | None, shown: Task, layer: str, n_units: int,
            settings: DreamSettings, start: int, total: int) -> Callable[[int, int], None]:
    """A layer's ``dream`` progress callback (its steps): the caller's ``progress`` in steps of every layer, and
    the reporter's units done (the layer's finished batches) with the step under way."""
    base, steps, per_batch = shown.done, settings.steps, settings.batch_size

    def tick(n: int, _: int) -> None:
        if progress is not None:
            progress(start + n, total)
        finished = min(n // steps * per_batch, n_units)
        shown.update(base + finished, detail=f"{layer} step {(n - 1) % steps + 1}/{steps}")

    return tick


def _dream_layer(model: nn.Module, prep: Preprocessing, layer: str, channels: list[int], settings: DreamSettings,
                 tick: Callable[[int, int], None]) -> LayerDreams:
    """One layer's units dreamed together (at the model's input size where the layer needs it)."""
    log.info("dreaming %d units of %s", len(channels), layer)
    fits = settings.input_size is not None or runs_at(model, layer, settings.size)
    result = dream(model, [channel(layer, ch) for ch in channels], mean=prep.mean, std=prep.std,
                   settings=settings if fits else replace(settings, input_size=prep.crop), progress=tick)
    return LayerDreams(np.array(channels, np.int64), result.images.astype(np.float32),
                       result.scores.astype(np.float32))


def mine_dreams(config: MineConfig, ctx: RunContext, projections: Sequence[UnitTopProjections],
                timings: dict[str, float], independent: Sequence[str] = ()) -> tuple[dict[str, LayerDreams], dict]:
    """The rendered units' dreams and their settings (for the manifest, with ``reason``: why it dreamed) when
    ``dream_reason`` says so (``independent``: the rendered layers whose projections do not depend on the image),
    else empty; records ``timings["dream"]``."""
    reason = dream_reason(config.dream, independent, ctx.input_shape[1])
    if reason is None or not projections:
        return {}, {}
    started = time.perf_counter()
    settings = mine_dream_settings(config.dream_steps, config.dream_size, config.seed)
    dreams = dream_units(ctx.model, ctx.loaded.preprocessing, [(u.layer, u.channel) for u in projections],
                         settings)
    timings["dream"] = time.perf_counter() - started
    return dreams, {**settings.to_dict(), "reason": reason}


__all__ = ["MINE_DREAM", "check_dream", "dream_reason", "dream_units", "mine_dream_settings", "mine_dreams"]
