"""Render projection results into per-image output folders: PDF pages, raw arrays, a manifest, atomically."""
from __future__ import annotations

from vizkit.render.arrays import save_deconv_npz
from vizkit.render.atomic import atomic_dir
from vizkit.render.deconv import write_deconv_outputs
from vizkit.render.deconv_pdf import render_deconv_pdf
from vizkit.render.display import normalise_projection
from vizkit.render.info import ReportInfo
from vizkit.render.manifest import write_manifest

__all__ = [
    "ReportInfo",
    "atomic_dir",
    "normalise_projection",
    "render_deconv_pdf",
    "save_deconv_npz",
    "write_deconv_outputs",
    "write_manifest",
]
