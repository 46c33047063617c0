"""``vizkit filters`` as a function: ``run_filters(FiltersConfig(...))`` writes ``OUT/filters/``.

Which layers: ``layers`` given -> exactly those (statistics and a picture page each). Default -> every ``Conv2d``
in the statistics (summary table and npz) and picture pages for at most ``max_pages`` of them: the first conv
(the one that sees the image) and the rest spread evenly over the depth, the last conv included.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vizkit.capture.filters import DEAD_RATIO, DEFAULT_RADIUS, filter_stats, running_convs
from vizkit.errors import UserInputError
from vizkit.jobs.common import JobReport, ModelJob
from vizkit.render.filters_pdf import write_filters_outputs
from vizkit.render.info import ReportInfo

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


def run_filters(config: FiltersConfig, *, progress: Callable[[str], None] | None = None) -> JobReport:
    """Run ``vizkit filters``: ``OUT/filters/`` with filters.pdf, filters.npz and filters.manifest.json, atomically.

    Model, layer and option problems raise a ``VizkitError`` (exit code 2); the report lists the one folder.
    """
    config.check()
    started = time.perf_counter()
    loaded = config.load()
    load_seconds = time.perf_counter() - started
    t0 = time.perf_counter()
    stats = filter_stats(loaded.model, config.layers or None, config.radius, dead_ratio=config.dead_ratio)
    names = [s.layer for s in stats]
    prep = loaded.preprocessing
    runs = set(running_convs(loaded.model, (1, prep.channels, prep.crop, prep.crop)))
    pictured = names if config.layers else pictured_layers([n for n in names if n in runs], config.max_pages)
    settings = {"layers": names if config.layers else "every Conv2d", "pictured": pictured,
                "radius": config.radius, "dead_ratio": config.dead_ratio,
                "max_pages": None if config.layers else config.max_pages}
    info = ReportInfo(None, loaded.name, loaded.weights, loaded.weights_sha256,
                      loaded.pretrained, loaded.preprocessing.to_dict(), settings, config.command)
    timings = {"load_model": load_seconds, "statistics": time.perf_counter() - t0}
    folder = write_filters_outputs(stats, info, Path(config.out), pictured, timings)
    if progress:
        progress(str(folder))
    return JobReport(written=[folder])


__all__ = ["FiltersConfig", "pictured_layers", "run_filters"]
