"""Render results into per-image output folders: PDF pages, raw arrays, a manifest, atomically.

``write_outputs(result, info, out_dir, stem, timings)`` writes any command's result (``vizkit.render.writer``). Each
command owns its module here (``deconv``, ``gradcam``, ...); what they share is in ``vizkit.render.kit``, and the
files' ground floor (atomic folders, manifests, ``ReportInfo``, npz) in ``vizkit.outputs``.
"""
from __future__ import annotations

from vizkit.render.deconv import render_deconv_pdf, save_deconv_npz, write_deconv_outputs
from vizkit.render.kit.display import normalise_projection
from vizkit.render.writer import write_outputs

__all__ = [
    "normalise_projection",
    "render_deconv_pdf",
    "save_deconv_npz",
    "write_deconv_outputs",
    "write_outputs",
]
