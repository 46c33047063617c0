"""The one progress reporter (vizkit.outputs.progress): redrawn on a terminal, one summary line elsewhere, never on
stdout; and what the dataset stream and the CLI report through it."""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from vizkit.outputs import progress
from vizkit.outputs.progress import Progress, reporting


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_not_a_terminal_gets_one_summary_line_per_task() -> None:
    out, clock = io.StringIO(), Clock()
    reporter = Progress(out, clock=clock)
    with reporter.task("scan", 100, "images") as task:
        for done in range(10, 101, 10):
            clock.now += 0.5
            task.update(done)
    assert "\r" not in out.getvalue()
    assert out.getvalue().splitlines() == ["scan: 100 images in 0:05 (20.0 images/s)"]


def test_terminal_redraws_in_place_with_rate_and_eta() -> None:
    out, clock = Terminal(), Clock()
    reporter = Progress(out, clock=clock, interval=0.0)
    task = reporter.task("scan", 1000, "images")
    clock.now = 2.0
    task.update(100)
    assert out.getvalue().endswith("\rscan: 100/1000 images, 50.0 images/s, ETA 0:18".replace("\r", "\r\x1b[K"))
    reporter.note("vizkit: skipped: broken.png")  # a line that stays: the bar is cleared first
    assert out.getvalue().endswith("\r\x1b[Kvizkit: skipped: broken.png\n")
    task.close()
    assert out.getvalue().endswith("scan: 100 images in 0:02 (50.0 images/s)\n")


def test_units_count_without_rate_and_resumed_work_is_not_in_the_rate() -> None:
    out, clock = io.StringIO(), Clock()
    reporter = Progress(out, clock=clock)
    with reporter.task("project", 8, "units") as units:
        clock.now = 3.0
        units.update(8)
    with reporter.task("scan", 200, "images", start=100) as scan:  # 100 done by the run that was interrupted
        clock.now = 4.0
        scan.update(200)
    assert out.getvalue().splitlines() == ["project: 8 units in 0:03",
                                           "scan: 200 images in 0:01 (100.0 images/s); 100 done by an earlier run"]


def test_interrupted_task_prints_no_summary_and_hidden_rank_prints_notes_only() -> None:
    out = io.StringIO()
    reporter = Progress(out, show=False)
    try:
        with reporter.task("scan", 10) as task:
            task.update(5)
            raise KeyboardInterrupt
    except KeyboardInterrupt:
        pass
    reporter.note("a note")
    assert out.getvalue() == "a note\n"


def test_library_tasks_are_silent_without_a_reporter_and_reach_the_current_one(tmp_path: Path,
                                                                             capsys) -> None:
    with progress.task("scan", 3) as task:
        task.update(3)
    assert capsys.readouterr() == ("", "")
    out = io.StringIO()
    with reporting(Progress(out)):
        with progress.task("scan", 3) as task:
            task.update(3)
        progress.note("hello")
    assert out.getvalue().splitlines()[0].startswith("scan: 3 images in") and "hello" in out.getvalue()


def _folder(root: Path, n: int, broken: int = 0) -> Path:
    rng = np.random.default_rng(0)
    root.mkdir()
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(root / f"{i:02d}.png")
    for i in range(broken):
        (root / f"broken{i}.png").write_text("not a picture")
    return root


@pytest.mark.slow
def test_mine_reports_scan_and_projection_progress_on_stderr_only(tmp_path: Path) -> None:
    from vizkit_cli.main import main

    data = _folder(tmp_path / "d", 6)
    result = CliRunner().invoke(main, ["mine", str(data), "--model", "labnet", "--layer", "features.conv3",
                                       "--units", "0,1", "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.stderr
    lines = result.stderr.splitlines()
    assert any(line.startswith("scan: 6 images in ") and "images/s" in line for line in lines)
    assert any(line.startswith("project: 2 units in ") for line in lines)
    assert "images/s" not in result.stdout and "units in" not in result.stdout


def test_per_image_commands_end_with_one_summary_line(tmp_path: Path, sample_paths: list[Path]) -> None:
    from vizkit_cli.main import main

    result = CliRunner().invoke(main, ["deconv", *map(str, sample_paths[:2]), "--model", "lenet5", "--top-k", "1",
                                       "--out", str(tmp_path)])
    assert result.exit_code == 0, result.stderr
    assert next(line for line in result.stderr.splitlines() if line.startswith("deconv: ")).startswith(
        "deconv: 2 images in ")
