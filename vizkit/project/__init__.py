"""Project activations back to pixel space: the Zeiler–Fergus deconvnet and its rules."""
from __future__ import annotations

from vizkit.project.deconv import (
    Capture,
    DeconvOutput,
    Unit,
    deconv,
    forward_capture,
    project_cropped,
    project_full,
    top_units,
)
from vizkit.project.explicit import explicit_deconv
from vizkit.project.gradcam import GradCamOutput, default_gradcam_layer, gradcam, guided_backprop
from vizkit.project.occlusion import OcclusionMaps, occlusion_maps
from vizkit.project.results import AuditEntry, DeconvResult, LayerProjections, Prediction, UnitProjection
from vizkit.project.rules import DeconvRules
from vizkit.project.sanity import SanityResult, sanity_checks
from vizkit.scan.topk import LayerTopK, MineResult, merge_topk

__all__ = [
    "AuditEntry", "Capture", "DeconvOutput", "DeconvResult", "DeconvRules", "GradCamOutput", "LayerProjections",
    "LayerTopK", "MineResult", "OcclusionMaps", "Prediction", "SanityResult", "Unit", "UnitProjection", "deconv",
    "default_gradcam_layer", "explicit_deconv", "forward_capture", "gradcam", "guided_backprop", "merge_topk",
    "occlusion_maps", "project_cropped", "project_full", "sanity_checks", "top_units",
]
