"""Whole commands as functions: a config dataclass in, per-image folders and a ``JobReport`` out.

The CLI only turns options into these configs; everything it does is reachable from Python. A command builds one
``RunContext`` per run and writes each result with ``vizkit.render.writer.write_outputs`` (docs/DESIGN.md,
"Writing a new command").
"""
from __future__ import annotations

from vizkit.jobs.activations import ActivationsConfig, activations_image, activations_tensor, run_activations
from vizkit.jobs.common import Failure, ImageJob, JobReport, ModelJob, for_each_image, predictions, resolve_device
from vizkit.jobs.context import RunContext, input_shape, model_device, tiny_activation_notes
from vizkit.jobs.deconv import DeconvConfig, deconv_image, deconv_result, deconv_tensor, project_tensor, run_deconv
from vizkit.jobs.filters import FiltersConfig, run_filters
from vizkit.jobs.gradcam import GradCamConfig, gradcam_image, gradcam_inputs, run_gradcam
from vizkit.jobs.occlusion import OcclusionConfig, occlusion_image, occlusion_tensor, run_occlusion
from vizkit.jobs.report import ReportConfig, run_report

__all__ = ["ActivationsConfig", "DeconvConfig", "Failure", "FiltersConfig", "GradCamConfig", "ImageJob", "JobReport",
           "ModelJob", "OcclusionConfig", "ReportConfig", "RunContext", "activations_image", "activations_tensor",
           "deconv_image", "deconv_result", "deconv_tensor", "for_each_image", "gradcam_image", "gradcam_inputs",
           "input_shape", "model_device", "occlusion_image", "occlusion_tensor", "predictions", "project_tensor",
           "resolve_device", "run_activations", "run_deconv", "run_filters", "run_gradcam", "run_occlusion",
           "run_report", "tiny_activation_notes"]
