"""The per-image folder of `vizkit deconv`: deconv.npz, deconv.pdf, manifest.json (last), all or nothing."""
from __future__ import annotations

import time
from pathlib import Path

from vizkit.project.results import DeconvResult
from vizkit.render.arrays import save_deconv_npz
from vizkit.render.atomic import atomic_dir
from vizkit.render.deconv_pdf import render_deconv_pdf
from vizkit.render.info import ReportInfo
from vizkit.render.manifest import write_manifest


def write_deconv_outputs(result: DeconvResult, info: ReportInfo, out_dir: Path, stem: str,
                         timings: dict[str, float]) -> Path:
    """Write ``out_dir/stem/`` atomically and return it. ``timings`` gains a ``render`` entry (seconds)."""
    if not stem or stem in (".", "..") or "/" in stem or "\\" in stem or stem.startswith("."):
        raise ValueError(f"output folder name {stem!r} must be a plain, non-hidden file name")
    start = time.perf_counter()
    with atomic_dir(Path(out_dir) / stem) as tmp:
        save_deconv_npz(result, tmp / "deconv.npz")
        render_deconv_pdf(result, info, tmp / "deconv.pdf")
        write_manifest(tmp, info, {**timings, "render": time.perf_counter() - start})
    return Path(out_dir) / stem
