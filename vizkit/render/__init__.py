"""Render results into per-image output folders: PDF pages, raw arrays, a manifest, atomically.

``write_outputs(result, info, out_dir, stem, timings)`` writes any command's result (``vizkit.render.writer``).
"""
from __future__ import annotations

from vizkit.render.arrays import save_deconv_npz
from vizkit.render.atomic import atomic_dir
from vizkit.render.deconv import render_deconv_pdf, write_deconv_outputs
from vizkit.render.display import normalise_projection
from vizkit.render.info import ReportInfo
from vizkit.render.manifest import write_manifest
from vizkit.render.writer import write_outputs

__all__ = [
    "ReportInfo",
    "atomic_dir",
    "normalise_projection",
    "render_deconv_pdf",
    "save_deconv_npz",
    "write_deconv_outputs",
    "write_manifest",
    "write_outputs",
]
