"""Helpers for vizkit's own tests and for users checking their models against references, as ``captum.testing``
is for Captum: oracle seeds for the explicit deconvnet, models built on the meta device, and the checks that a call
left a model as it was (``hook_count``, ``state_fingerprint``, ``flags``). Nothing in the runtime package imports
from here."""
from __future__ import annotations

from vizkit.testing.deconv import explicit_seeds
from vizkit.testing.meta import build_on_meta
from vizkit.testing.model_state import flags, hook_count, state_fingerprint

__all__ = ["build_on_meta", "explicit_seeds", "flags", "hook_count", "state_fingerprint"]
