"""Whole commands as functions: a config dataclass in, per-image folders and a ``JobReport`` out.

The CLI only turns options into these configs; everything it does is reachable from Python.
"""
from __future__ import annotations

from vizkit.jobs.common import (
           Failure,
           JobReport,
           for_each_image,
           predictions,
           resolve_device,
)
from vizkit.jobs.deconv import DeconvConfig, deconv_image, run_deconv

__all__ = ["DeconvConfig", "Failure", "JobReport", "deconv_image", "for_each_image", "predictions",
           "resolve_device", "run_deconv"]
