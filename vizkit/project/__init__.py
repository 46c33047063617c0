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
from vizkit.project.sanity import SanityResult, sanity_checks
from vizkit.project.results import (
    AuditEntry,
    DeconvResult,
    LayerProjections,
    Prediction,
    UnitProjection,
)
from vizkit.project.rules import DeconvRules

__all__ = [
    "AuditEntry", "Capture", "GradCamOutput", "OcclusionMaps", "SanityResult", "default_gradcam_layer", "gradcam",
    "guided_backprop", "occlusion_maps", "sanity_checks", "DeconvOutput", "DeconvResult", "DeconvRules", "LayerProjections", "Prediction", "Unit",
    "UnitProjection", "deconv", "explicit_deconv", "forward_capture", "project_cropped", "project_full", "top_units",
]
