"""``vizkit filters`` as a function: ``run_filters(FiltersConfig(...))`` writes ``OUT/filters/``.

Which layers: ``layers`` given -> exactly those (statistics and a picture page each). Default -> every ``Conv2d``
in the statistics (summary table and npz) and picture pages for at most ``max_pages`` of them: the first conv
(the one that sees the image) and the rest spread evenly over the depth, the last conv included.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from vizkit.capture.filters import DEAD_RATIO, DEFAULT_RADIUS, filter_stats, running_convs
from vizkit.errors import UserInputError
from vizkit.jobs.common import JobReport, ModelJob
from vizkit.jobs.context import RunContext
from vizkit.project.results import FiltersResult

DEFAULT_MAX_PAGES = 9


@dataclass
class FiltersConfig(ModelJob):
    """Options of ``vizkit filters``."""

    layers: Sequence[str] | None = None
    radius: float = DEFAULT_RADIUS
    dead_ratio: float = DEAD_RATIO
    max_pages: int = DEFAULT_MAX_PAGES

    def check(self) -> None:
        if not self.radius > 0:
            raise UserInputError(f"--radius must be positive, got {self.radius}")
        if not self.dead_ratio >= 0:
            raise UserInputError(f"dead ratio must be non-negative, got {self.dead_ratio}")
        if self.max_pages < 1:
            raise UserInputError(f"--max-pages must be at least 1, got {self.max_pages}")


def pictured_layers(names: Sequence[str], max_pages: int = DEFAULT_MAX_PAGES) -> list[str]:
    """The first name and up to ``max_pages - 1`` more spread evenly over the rest (the last one included)."""
    names = list(names)
    if len(names) <= max_pages:
        return names
    if max_pages == 1:
        return names[:1]
    picks = np.unique(np.round(np.linspace(len(names) - 1, 1, max_pages - 1)).astype(int))  # the last first
    return [names[0]] + [names[i] for i in picks]


def running_pictured(ctx: RunContext, names: Sequence[str], max_pages: int) -> list[str]:
    """``pictured_layers`` among the convolutions an eval forward runs (not GoogLeNet's aux heads)."""
    runs = set(running_convs(ctx.model, ctx.input_shape))
    return pictured_layers([n for n in names if n in runs], max_pages)


def run_filters(config: FiltersConfig, *, progress: Callable[[str], None] | None = None) -> JobReport:
    """Run ``vizkit filters``: ``OUT/filters/`` with filters.pdf, filters.npz and filters.manifest.json, atomically.

    Model, layer and option problems raise a ``VizkitError`` (exit code 2); the report lists the one folder.
    """
    from vizkit.render.writer import write_outputs

    config.check()
    ctx = RunContext.from_job(config)
    t0 = time.perf_counter()
    stats = filter_stats(ctx.model, config.layers or None, config.radius, dead_ratio=config.dead_ratio)
    names = [s.layer for s in stats]
    pictured = names if config.layers else running_pictured(ctx, names, config.max_pages)
    settings = {"layers": names if config.layers else "every Conv2d", "pictured": pictured,
                "radius": config.radius, "dead_ratio": config.dead_ratio,
                "max_pages": None if config.layers else config.max_pages}
    timings = {"load_model": ctx.load_seconds, "statistics": time.perf_counter() - t0}
    folder = write_outputs(FiltersResult(stats, pictured), ctx.info(None, settings), config.out, timings=timings)
    if progress:
        progress(str(folder))
    return JobReport(written=[folder])


__all__ = ["FiltersConfig", "pictured_layers", "run_filters", "running_pictured"]
