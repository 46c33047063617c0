"""The size of `vizkit mine`'s outputs for 80 units x 9 (issue: mine.pdf was 45 MB), and the render time.

    python benchmarks/bench_mine_pdf.py [--images 50] [--units 16] [--k 9] [--threads 2] [--cache FILE] [--dream]

VGG16 with seeded random weights (``--weights none``: offline), five distinct stages (``features.3``, ``.8``,
``.15``, ``.22``, ``.29``) x ``--units`` top units = 80 rendered units of top-9 over ``--images`` photos made
offline by ``_images.py``: the scan and pass 2 of ``run_mine``. ``--cache`` keeps the scan and projections (a pickle)
so a second run only renders. The PDF is written twice: as vizkit writes it (pictures embedded at the resolution
they are shown at, ``PICTURE_DPI``) and with every source pixel embedded (what it was before), and the sizes of
mine.pdf, mine.npz and html/ are printed with ``target mine.pdf <= 10 MB: met/NOT met``.
"""
from __future__ import annotations

import argparse
import pickle
import sys
import tempfile
import time
from pathlib import Path
from unittest import mock

import torch
from _images import make_image_folder
from _machine import machine

from vizkit.jobs.mine import MineConfig, run_mine
from vizkit.render.kit.display import PICTURE_DPI

LAYERS = ["features.3", "features.8", "features.15", "features.22", "features.29"]
TARGET_MB = 10.0


def scan_and_project(folder: Path, units: int, k: int, out: Path, dream: bool) -> tuple[object, object]:
    """``run_mine``'s MineOutput and ReportInfo, caught on their way to the writer."""
    import vizkit.render.writer as writer

    caught: dict[str, tuple[object, object]] = {}
    real = writer.write_outputs

    def spy(result: object, info: object, out_dir: object, **kw: object) -> Path:
        caught["output"] = (result, info)
        return real(result, info, out_dir, **kw)  # type: ignore[arg-type]

    with mock.patch.object(writer, "write_outputs", spy):
        run_mine(MineConfig(data=str(folder), model="vgg16", weights="none", units=f"top:{units}", top_k=k,
                            layers=LAYERS, batch_size=16, out=str(out), device="cpu", dream=dream))
    return caught["output"]


def size_mb(path: Path) -> float:
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    return sum(p.stat().st_size for p in files) / 1e6


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=int, default=50)
    p.add_argument("--units", type=int, default=16)
    p.add_argument("--k", type=int, default=9)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--cache", default=None, help="pickle of the scan and projections (written if missing)")
    p.add_argument("--dream", action="store_true", help="also dream every rendered unit (mine --dream)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    work = Path(tempfile.mkdtemp(prefix="bench_mine_pdf_"))
    print(f"machine: {machine()}")
    cache = Path(args.cache) if args.cache else None
    if cache is not None and cache.is_file():
        output, info = pickle.loads(cache.read_bytes())
    else:
        folder = make_image_folder(work / "images", args.images)
        t0 = time.perf_counter()
        output, info = scan_and_project(folder, args.units, args.k, work / "first", args.dream)
        print(f"scan + projections{' + dreams' if args.dream else ''}: {time.perf_counter() - t0:.1f} s")
        if cache is not None:
            cache.write_bytes(pickle.dumps((output, info)))
    from vizkit.render.writer import write_outputs

    units = len(output.projections)  # type: ignore[attr-defined]
    t0 = time.perf_counter()
    folder = write_outputs(output, info, work / "now")  # type: ignore[arg-type]
    render = time.perf_counter() - t0
    with mock.patch("vizkit.render.kit.page.at_shown_size", lambda picture, *a, **kw: picture):
        before = write_outputs(output, info, work / "before")  # type: ignore[arg-type]
    pdf, old = size_mb(folder / "mine.pdf"), size_mb(before / "mine.pdf")
    print(f"{units} units x {args.k}, {args.images} images, VGG16 {', '.join(LAYERS)}: mine.pdf {pdf:.1f} MB "
          f"(pictures at {PICTURE_DPI} dpi; {old:.1f} MB with every source pixel), mine.npz "
          f"{size_mb(folder / 'mine.npz'):.1f} MB, html/ {size_mb(folder / 'html'):.1f} MB; outputs written in "
          f"{render:.1f} s")
    print(f"target mine.pdf <= {TARGET_MB:g} MB: {'met' if pdf <= TARGET_MB else 'NOT met'} ({pdf:.1f} MB)")
    sys.exit(0 if pdf <= TARGET_MB else 1)


if __name__ == "__main__":
    main()
