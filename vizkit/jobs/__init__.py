"""Whole commands as functions: a config dataclass in, per-image folders and a ``JobReport`` out.

The CLI only turns options into these configs; everything it does is reachable from Python. A command builds one
``RunContext`` per run and writes each result with ``vizkit.render.writer.write_outputs`` (docs/DESIGN.md,
"Writing a new command").

Names are imported lazily (PEP 562): ``import vizkit.jobs`` costs nothing until a name is used.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from vizkit.jobs.activations import ActivationsConfig, activations_image, activations_tensor, run_activations
    from vizkit.jobs.common import Failure, ImageJob, JobReport, ModelJob, for_each_image, predictions, resolve_device
    from vizkit.jobs.context import RunContext, input_shape, model_device, tiny_activation_notes
    from vizkit.jobs.deconv import DeconvConfig, deconv_image, deconv_result, deconv_tensor, project_tensor, run_deconv
    from vizkit.jobs.evolve import EvolveConfig, evolve_checkpoints, run_evolve
    from vizkit.jobs.filters import FiltersConfig, run_filters
    from vizkit.jobs.gradcam import GradCamConfig, gradcam_image, gradcam_inputs, run_gradcam
    from vizkit.jobs.invariance import InvarianceConfig, invariance_image, invariance_tensor, run_invariance
    from vizkit.jobs.mine import MineConfig, MineReport, mine_dataset, run_mine
    from vizkit.jobs.occlusion import OcclusionConfig, occlusion_image, occlusion_tensor, run_occlusion
    from vizkit.jobs.report import ReportConfig, run_report
    from vizkit.jobs.shortcuts import ShortcutsConfig, ShortcutsReport, run_shortcuts, shortcuts_result

_EXPORTS = {
    "ActivationsConfig": "vizkit.jobs.activations",
    "DeconvConfig": "vizkit.jobs.deconv",
    "EvolveConfig": "vizkit.jobs.evolve",
    "Failure": "vizkit.jobs.common",
    "FiltersConfig": "vizkit.jobs.filters",
    "GradCamConfig": "vizkit.jobs.gradcam",
    "ImageJob": "vizkit.jobs.common",
    "InvarianceConfig": "vizkit.jobs.invariance",
    "JobReport": "vizkit.jobs.common",
    "MineConfig": "vizkit.jobs.mine",
    "MineReport": "vizkit.jobs.mine",
    "ModelJob": "vizkit.jobs.common",
    "OcclusionConfig": "vizkit.jobs.occlusion",
    "ReportConfig": "vizkit.jobs.report",
    "RunContext": "vizkit.jobs.context",
    "ShortcutsConfig": "vizkit.jobs.shortcuts",
    "ShortcutsReport": "vizkit.jobs.shortcuts",
    "activations_image": "vizkit.jobs.activations",
    "activations_tensor": "vizkit.jobs.activations",
    "deconv_image": "vizkit.jobs.deconv",
    "deconv_result": "vizkit.jobs.deconv",
    "deconv_tensor": "vizkit.jobs.deconv",
    "evolve_checkpoints": "vizkit.jobs.evolve",
    "for_each_image": "vizkit.jobs.common",
    "gradcam_image": "vizkit.jobs.gradcam",
    "gradcam_inputs": "vizkit.jobs.gradcam",
    "input_shape": "vizkit.jobs.context",
    "mine_dataset": "vizkit.jobs.mine",
    "invariance_image": "vizkit.jobs.invariance",
    "invariance_tensor": "vizkit.jobs.invariance",
    "model_device": "vizkit.jobs.context",
    "occlusion_image": "vizkit.jobs.occlusion",
    "occlusion_tensor": "vizkit.jobs.occlusion",
    "predictions": "vizkit.jobs.common",
    "project_tensor": "vizkit.jobs.deconv",
    "resolve_device": "vizkit.jobs.common",
    "run_activations": "vizkit.jobs.activations",
    "run_deconv": "vizkit.jobs.deconv",
    "run_evolve": "vizkit.jobs.evolve",
    "run_filters": "vizkit.jobs.filters",
    "run_gradcam": "vizkit.jobs.gradcam",
    "run_mine": "vizkit.jobs.mine",
    "run_invariance": "vizkit.jobs.invariance",
    "run_occlusion": "vizkit.jobs.occlusion",
    "run_report": "vizkit.jobs.report",
    "run_shortcuts": "vizkit.jobs.shortcuts",
    "shortcuts_result": "vizkit.jobs.shortcuts",
    "tiny_activation_notes": "vizkit.jobs.context",
}

__all__ = ["ActivationsConfig", "DeconvConfig", "EvolveConfig", "Failure", "FiltersConfig", "GradCamConfig", "ImageJob",
           "InvarianceConfig", "JobReport", "MineConfig", "MineReport", "ModelJob", "OcclusionConfig", "ReportConfig",
           "RunContext", "ShortcutsConfig", "ShortcutsReport", "activations_image", "activations_tensor",
           "deconv_image", "deconv_result", "deconv_tensor", "evolve_checkpoints", "for_each_image", "gradcam_image",
           "gradcam_inputs", "input_shape", "invariance_image", "invariance_tensor", "mine_dataset", "model_device",
           "occlusion_image", "occlusion_tensor", "predictions", "project_tensor", "resolve_device", "run_activations",
           "run_deconv", "run_evolve", "run_filters", "run_gradcam", "run_invariance", "run_mine", "run_occlusion",
           "run_report", "run_shortcuts", "shortcuts_result", "tiny_activation_notes"]


def __getattr__(name: str) -> Any:
    """Import a public name's module on first use: a command loads only the modules it needs."""
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
