"""Whole commands as functions: a config dataclass in, per-image folders and a ``JobReport`` out.

The CLI only turns options into these configs; everything it does is reachable from Python.
"""
from __future__ import annotations

from vizkit.jobs.activations import ActivationsConfig, run_activations
from vizkit.jobs.common import Failure, JobReport, for_each_image, predictions, resolve_device
from vizkit.jobs.deconv import DeconvConfig, deconv_image, run_deconv
from vizkit.jobs.filters import FiltersConfig, run_filters
from vizkit.jobs.gradcam import GradCamConfig, gradcam_image, run_gradcam
from vizkit.jobs.mine import MineConfig, MineReport, run_mine
from vizkit.jobs.mine_api import mine
from vizkit.jobs.occlusion import OcclusionConfig, run_occlusion
from vizkit.jobs.report import ReportConfig, run_report

__all__ = ["ActivationsConfig", "DeconvConfig", "Failure", "FiltersConfig", "GradCamConfig", "JobReport",
           "MineConfig", "MineReport", "OcclusionConfig", "ReportConfig", "deconv_image", "for_each_image",
           "gradcam_image", "mine", "predictions", "resolve_device", "run_activations", "run_deconv", "run_filters",
           "run_gradcam", "run_mine", "run_occlusion", "run_report"]
