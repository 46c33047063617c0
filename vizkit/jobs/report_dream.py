"""The dream column of ``vizkit report``: what each layer's ranked units and the top class want to see.

On by default where the deconvnet cannot say it: when no projected layer has a max-pool switch or gate before it,
every projection is the same for every image that fires the same units (EfficientNet-Lite0, the default model),
and the dream is the picture of the unit that the data does not bound. ``--dream``/``--no-dream`` force it.

Dreams belong to units, not images: one run keeps them by objective, so a unit ranked on several images is dreamt
once (seeded by its position in the run). The settings are chosen to add well under a minute to a default report
on two CPU cores (docs/commands/report.md has the measurement); ``vizkit dream`` makes the full-size ones.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from vizkit.jobs.context import RunContext
from vizkit.jobs.dream import accepts_size, dream_tensor
from vizkit.project.dream import DreamResult, DreamSettings, Objective, channel, class_logit
from vizkit.project.results import DeconvResult

UNITS_PER_LAYER = 4  # the strongest ranked units of each projected layer
REPORT_SIZE = 128  # px of canvas and views, when the model runs on inputs that small
#: Cheap on a CPU: a 128 px canvas seen at 128 px (progressive from 64), 32 MACO steps, eight objectives a batch.
REPORT_DREAM = DreamSettings(method="maco", steps=32, size=REPORT_SIZE, input_size=REPORT_SIZE, batch_size=8)


def dream_wanted(flag: bool | None, deconv: DeconvResult) -> bool:
    """``flag`` when given; else on when no projected layer's projections depend on the image (no max-pool
    switch or gate anywhere before them)."""
    return flag if flag is not None else not any(lp.image_dependent for lp in deconv.layers)


@dataclass
class ReportDreams:
    """The dreams of one report run, kept by objective. ``flag``: ``--dream`` (True), ``--no-dream`` (False),
    neither (None: :func:`dream_wanted`)."""

    ctx: RunContext
    flag: bool | None = None
    settings: DreamSettings = REPORT_DREAM
    units: int = UNITS_PER_LAYER
    _rows: dict[str, tuple[np.ndarray, float, np.ndarray | None, str]] = field(default_factory=dict, repr=False)
    _made: int = field(default=0, repr=False)
    _base: DreamResult | None = field(default=None, repr=False)

    def manifest(self) -> dict:
        """What the report's manifest says about its dream column."""
        return {"dream": "on" if self.flag else ("off" if self.flag is False else "auto"),
                "dream_settings": None if self.flag is False else self._fitted().to_dict(),
                "dream_units_per_layer": self.units}

    def _fitted(self) -> DreamSettings:
        """The settings at a size the model runs on: its own input size when it is smaller than the settings'
        or when it takes no other (a Linear layer after a flatten)."""
        full = self.ctx.input_shape[-1]
        size = min(self.settings.input_size or self.settings.size, full)
        if size != full and not accepts_size(self.ctx, size):
            size = full
        return replace(self.settings, size=size, input_size=size)

    def objectives(self, deconv: DeconvResult, top_class: int) -> list[Objective]:
        """The ranked units of each projected layer (strongest first), then the top class."""
        units = [channel(lp.layer, u.channel) for lp in deconv.layers for u in lp.units[:self.units]]
        return [*units, class_logit(top_class)]

    def __call__(self, deconv: DeconvResult, top_class: int) -> DreamResult | None:
        """This image's dream column, or None when it is off; dreams only the objectives not met before."""
        if not dream_wanted(self.flag, deconv):
            return None
        objectives = self.objectives(deconv, top_class)
        missing = [o for o in objectives if o.name not in self._rows]
        if missing:
            made = dream_tensor(self.ctx, None, missing, self._fitted(), first_index=self._made)
            self._made += len(missing)
            self._base = self._base or made
            for i, name in enumerate(made.objectives):
                alpha = None if made.alpha is None else made.alpha[i]
                self._rows[name] = (made.images[i], float(made.scores[i]), alpha, made.label(i))
        rows = [self._rows[o.name] for o in objectives]
        base = self._base
        alphas = [r[2] for r in rows]
        return DreamResult(objectives=[o.name for o in objectives], images=np.stack([r[0] for r in rows]),
                           scores=np.array([r[1] for r in rows], dtype=np.float32),
                           reference=np.full(len(rows), np.nan, dtype=np.float32),
                           alpha=None if any(a is None for a in alphas) else np.stack(alphas),  # type: ignore[arg-type]
                           settings=dict(base.settings) if base else {}, labels=[r[3] for r in rows],
                           notes=list(base.notes) if base else [])


__all__ = ["REPORT_DREAM", "UNITS_PER_LAYER", "ReportDreams", "dream_wanted"]
