"""The per-image folder of `vizkit deconv`: deconv.npz, deconv.pdf, manifest.json (last), all or nothing."""
from __future__ import annotations

import time
from pathlib import Path

from vizkit.project.results import DeconvResult
from vizkit.render.arrays import save_deconv_npz
from vizkit.render.atomic import atomic_dir, output_folder
from vizkit.render.deconv_pdf import render_deconv_pdf
from vizkit.render.info import ReportInfo
from vizkit.render.manifest import write_manifest


def write_deconv_outputs(result: DeconvResult, info: ReportInfo, out_dir: Path, stem: str,
                         timings: dict[str, float]) -> Path:
    """Write ``out_dir/stem/`` atomically and return it. ``timings`` gains a ``render`` entry (seconds)."""
    start = time.perf_counter()
    final = output_folder(out_dir, stem)
    with atomic_dir(final) as tmp:
        save_deconv_npz(result, tmp / "deconv.npz")
        render_deconv_pdf(result, info, tmp / "deconv.pdf")
        write_manifest(tmp, info, {**timings, "render": time.perf_counter() - start})
    return final
