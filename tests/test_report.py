"""`vizkit report`: one PDF with contents and an HTML gallery that a real browser renders with every image."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from vizkit_cli.main import main

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def _pdf_pages(path: Path) -> int:
    return len(re.findall(rb"/Type\s*/Page[^s]", path.read_bytes()))


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory: pytest.TempPathFactory, sample_paths: list[Path]) -> Path:
    out = tmp_path_factory.mktemp("report")
    result = CliRunner().invoke(main, ["report", str(sample_paths[1]), "--model", "lenet5", "--top-k", "2",
                                       "--out", str(out)], catch_exceptions=False)
    assert result.exit_code == 0, result.stderr
    return out / "chelsea"


@pytest.mark.xdist_group("report_dir")  # tests sharing a module fixture run on one xdist worker: built once
def test_report_files_and_contents_page(report_dir: Path) -> None:
    assert {p.name for p in report_dir.iterdir()} >= {"report.pdf", "html", "deconv.npz", "report.manifest.json"}
    html = (report_dir / "html" / "index.html").read_text()
    images = re.findall(r'<img src="(img/p\d+\.png)"', html)
    assert _pdf_pages(report_dir / "report.pdf") == 1 + len(images)  # contents page + the same pages as the HTML
    assert all((report_dir / "html" / src).stat().st_size > 1000 for src in images)
    assert "Layer features.relu1" in html and "http" not in html.split("<body>")[1]  # nothing remote


@pytest.mark.xdist_group("report_dir")
def test_html_gallery_renders_in_headless_chromium(report_dir: Path, tmp_path: Path) -> None:
    if CHROMIUM is None:
        if os.environ.get("VIZKIT_REQUIRE_CHROMIUM"):
            pytest.fail("chromium is required here (VIZKIT_REQUIRE_CHROMIUM is set) but is not installed")
        pytest.skip("chromium not installed (apt-get install chromium)")
    index = (report_dir / "html" / "index.html").resolve()
    common = [CHROMIUM, *FLAGS, f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run([*common, "--virtual-time-budget=5000", "--dump-dom", index.as_uri()],
                         capture_output=True, text=True, timeout=120).stdout
    loaded = re.search(r'data-loaded="(\d+)/(\d+)"', dom)
    assert loaded, "the gallery's load script did not run"
    assert int(loaded.group(2)) > 0 and loaded.group(1) == loaded.group(2), loaded.group(0)
    shot = tmp_path / "shot.png"
    subprocess.run([*common, "--window-size=1000,1400", f"--screenshot={shot}", index.as_uri()],
                   capture_output=True, timeout=120)
    from PIL import Image

    pixels = np.asarray(Image.open(shot).convert("L"), dtype=np.float32)
    assert pixels.std() > 10, "screenshot is blank"
