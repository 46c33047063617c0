"""Project activations back to pixel space: the Zeiler–Fergus deconvnet and its rules.

Names are imported lazily (PEP 562): importing one module of the package does not load the others.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
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

_EXPORTS = {
    "AuditEntry": "vizkit.project.results",
    "Capture": "vizkit.project.deconv",
    "DeconvOutput": "vizkit.project.deconv",
    "DeconvResult": "vizkit.project.results",
    "DeconvRules": "vizkit.project.rules",
    "GradCamOutput": "vizkit.project.gradcam",
    "LayerProjections": "vizkit.project.results",
    "OcclusionMaps": "vizkit.project.occlusion",
    "Prediction": "vizkit.project.results",
    "SanityResult": "vizkit.project.sanity",
    "Unit": "vizkit.project.deconv",
    "UnitProjection": "vizkit.project.results",
    "deconv": "vizkit.project.deconv",
    "default_gradcam_layer": "vizkit.project.gradcam",
    "explicit_deconv": "vizkit.project.explicit",
    "forward_capture": "vizkit.project.deconv",
    "gradcam": "vizkit.project.gradcam",
    "guided_backprop": "vizkit.project.gradcam",
    "occlusion_maps": "vizkit.project.occlusion",
    "project_cropped": "vizkit.project.deconv",
    "project_full": "vizkit.project.deconv",
    "sanity_checks": "vizkit.project.sanity",
    "top_units": "vizkit.project.deconv",
}

__all__ = ["AuditEntry", "Capture", "DeconvOutput", "DeconvResult", "DeconvRules", "GradCamOutput",
           "LayerProjections", "OcclusionMaps", "Prediction", "SanityResult", "Unit", "UnitProjection", "deconv",
           "default_gradcam_layer", "explicit_deconv", "forward_capture", "gradcam", "guided_backprop",
           "occlusion_maps", "project_cropped", "project_full", "sanity_checks", "top_units"]


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
