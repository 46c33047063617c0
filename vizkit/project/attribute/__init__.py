"""Attribution: which input pixels the model's score for a target depends on, by the methods people expect.

Captum computes the gradient, path and perturbation methods, zennit the LRP relevance and CRP's conditional
relevance, vizkit its own CAM base and the guided-backprop/deconvnet rules (``METHODS`` says which is which, and
whether a map's sign means something). ``audit_model`` refuses models on which a wrapped library would be silently
wrong. ``vizkit.project.attribute.evaluate`` measures which method to trust on the user's own model.
"""
from __future__ import annotations

from vizkit.project.attribute.audit import ModelAudit, audit_model
from vizkit.project.attribute.compute import attribute
from vizkit.project.attribute.crp import ConditionalRelevance, conditional_relevance
from vizkit.project.attribute.lrp import COMPOSITES
from vizkit.project.attribute.methods import METHODS, MethodInfo, is_signed

__all__ = ["COMPOSITES", "METHODS", "ConditionalRelevance", "MethodInfo", "ModelAudit", "attribute", "audit_model",
           "conditional_relevance", "is_signed"]
