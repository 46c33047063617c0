"""Helpers for vizkit's own tests and for users checking their models, never imported by the runtime package
(as ``captum.testing``): oracle seeds for the explicit deconvnet."""
from __future__ import annotations

from vizkit.testing.deconv import explicit_seeds

__all__ = ["explicit_seeds"]
