"""Long runs that behave: OUT checked and locked before the model loads, Ctrl-C exits 130 naming the checkpoint
and the --resume command, --allow-skipped exits 0 when only input files were skipped."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image
from vizkit_cli.main import main

from vizkit.errors import UserInputError
from vizkit.outputs.lock import OutputLocked, check_output_dir, claim_output, lock_path

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / ".pp"), os.environ.get("PYTHONPATH", "")]),
       "OMP_NUM_THREADS": "1"}

# A process that holds OUT's mine lock until its stdin closes (stands for a run in progress).
HOLDER = textwrap.dedent("""
    import sys
    from vizkit.outputs.lock import claim_output
    with claim_output(sys.argv[1], "mine"):
        print("locked", flush=True)
        sys.stdin.read()
""")


def _images(root: Path, n: int, broken: int = 0) -> Path:
    rng = np.random.default_rng(0)
    root.mkdir(parents=True)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(root / f"{i:03d}.png")
    for i in range(broken):
        (root / f"broken{i}.png").write_text("not a picture")
    return root


def _run(args: list[str]) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, args, catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_output_folder_is_made_and_a_file_in_the_way_is_one_line(tmp_path: Path) -> None:
    assert check_output_dir(tmp_path / "a" / "b").is_dir()
    (tmp_path / "file").write_text("x")
    with pytest.raises(UserInputError, match="exists and is not a folder"):
        check_output_dir(tmp_path / "file")
    with pytest.raises(UserInputError, match=r"cannot create the output folder .*file/sub"):
        check_output_dir(tmp_path / "file" / "sub")


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_folder_is_refused(tmp_path: Path) -> None:
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        for out in (ro, ro / "sub"):
            with pytest.raises(UserInputError, match=r"not writable|cannot create"), claim_output(out, "mine"):
                pass
    finally:
        ro.chmod(0o755)


def test_lock_is_held_for_the_run_and_removed_after(tmp_path: Path) -> None:
    with claim_output(tmp_path, "mine") as notes:
        owner = json.loads(lock_path(tmp_path, "mine").read_text())
        assert notes == [] and owner["pid"] == os.getpid() and owner["command"] == "mine"
        with claim_output(tmp_path, "deconv"):  # another command's outputs: its own lock
            pass
    assert not lock_path(tmp_path, "mine").exists()
    with claim_output(tmp_path / "new", "mine"):  # made for the run, left empty (the model failed): removed
        assert (tmp_path / "new").is_dir()
    assert not (tmp_path / "new").exists()
    with claim_output(tmp_path / "kept", "mine"):
        (tmp_path / "kept" / "mine").mkdir()
    assert (tmp_path / "kept" / "mine").is_dir()


def test_second_run_refuses_naming_the_pid_of_the_first(tmp_path: Path) -> None:
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True, env=ENV)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        with pytest.raises(OutputLocked, match=rf"run \(pid {holder.pid}, started .*\) is writing to"), \
                claim_output(tmp_path, "mine"):
            pass
        code, _, err = _run(["mine", str(tmp_path / "nowhere"), "--out", str(tmp_path)])
        assert code == 2 and f"pid {holder.pid}" in err and len(err.strip().splitlines()) == 1
    finally:
        holder.communicate("")
    with claim_output(tmp_path, "mine"):  # released when the holder ended
        pass


def test_stale_lock_of_a_dead_process_is_taken_over(tmp_path: Path) -> None:
    dead = _dead_pid()
    lock_path(tmp_path, "mine").write_text(json.dumps({"pid": dead, "host": "here", "started": "earlier"}))
    with claim_output(tmp_path, "mine") as notes:
        assert json.loads(lock_path(tmp_path, "mine").read_text())["pid"] == os.getpid()
    assert notes == [f"took over the stale lock {lock_path(tmp_path, 'mine')} of pid {dead} (no longer running)"]
    lock_path(tmp_path, "mine").write_text(json.dumps({"pid": dead}))
    code, _, err = _run(["mine", str(tmp_path / "nowhere"), "--out", str(tmp_path)])  # the CLI says so, goes on
    assert code == 2 and err.splitlines()[0] == f"vizkit: {notes[0]}" and "DATA not found" in err.splitlines()[1]


def test_unwritable_out_exits_2_fast_without_loading_the_model(tmp_path: Path) -> None:
    marker = tmp_path / "model-was-built"
    (tmp_path / "net.py").write_text(textwrap.dedent(f"""
        from pathlib import Path
        from torch import nn
        def Net():
            Path({str(marker)!r}).write_text("built")
            return nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())
    """))
    data = _images(tmp_path / "d", 2)
    (tmp_path / "file").write_text("in the way")
    for command in (["mine", str(data)], ["invariance", str(data / "000.png")],
                    ["evolve", str(tmp_path / "net.py"), "--data", str(data)]):
        started = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "vizkit", *command, "--model", f"{tmp_path / 'net.py'}:Net",
                               "--input-size", "3,32,32", "--out", str(tmp_path / "file" / "out")],
                              capture_output=True, text=True, env=ENV, timeout=60)
        seconds = time.perf_counter() - started
        assert proc.returncode == 2, proc.stderr
        assert proc.stderr.strip().splitlines() == [
            f"vizkit: error: cannot create the output folder {tmp_path / 'file' / 'out'}: Not a directory; choose "
            "another --out"]
        assert seconds < 10 and not marker.exists()


def test_allow_skipped_turns_exit_2_for_skipped_files_into_0(tmp_path: Path, monkeypatch) -> None:
    data = _images(tmp_path / "d", 4, broken=1)
    args = ["mine", str(data), "--model", "labnet", "--layer", "features.conv3", "--no-project", "--out",
            str(tmp_path / "out")]
    code, _, err = _run(args)
    skips = [line for line in err.splitlines() if "skipped" in line and "broken0.png" in line]
    assert code == 2 and len(skips) == 1 and skips[0].count("broken0.png") == 1  # the path is named once
    code, _, err = _run([*args, "--allow-skipped"])
    assert code == 0 and "broken0.png" in err


def test_under_torchrun_a_skipped_file_says_the_outputs_are_complete(tmp_path: Path, monkeypatch, capsys) -> None:
    import click
    from vizkit_cli.common import exit_code

    from vizkit.jobs.common import Failure, JobReport

    monkeypatch.setenv("WORLD_SIZE", "2")
    skipped = JobReport(written=[tmp_path], failures=[Failure("x.png", "not an image", 2)])
    with click.Context(main) as ctx:
        assert exit_code(skipped) == 2
        hint = capsys.readouterr().err
        assert "the outputs are complete" in hint and "pass --allow-skipped to exit 0" in hint
        ctx.meta["vizkit.allow_skipped"] = True
        assert exit_code(skipped) == 0
        failed = JobReport(written=[tmp_path], failures=[Failure("x.png", "internal error", 1)])
        assert exit_code(failed) == 1  # --allow-skipped never hides an internal error
        assert exit_code(JobReport(failures=[Failure("d", "no checkpoint could be loaded", 2)])) == 2  # none written
        wrong = JobReport(written=[tmp_path], failures=[Failure("x.png", "target 7 does not exist", 2, False)])
        assert exit_code(wrong) == 2  # a usage error on one image is not a skipped file


_SLOW_MODEL = """
import time
from torch import nn

class Slow(nn.Module):  # 10 ms a forward whatever the machine, so the scan is still running when SIGINT comes
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.head = nn.Linear(4, 2)

    def forward(self, x):
        time.sleep(0.01)
        return self.head(self.conv(x).relu().mean((2, 3)))
"""


@pytest.mark.slow
def test_ctrl_c_exits_130_naming_the_checkpoint_and_resume_says_where(tmp_path: Path) -> None:
    data = _images(tmp_path / "d", 400)
    (tmp_path / "slow.py").write_text(_SLOW_MODEL)
    out = tmp_path / "out"
    args = [sys.executable, "-m", "vizkit", "mine", str(data), "--model", f"{tmp_path / 'slow.py'}:Slow",
            "--input-size", "3,40,40", "--layer", "conv", "--no-project", "--batch-size", "1",
            "--checkpoint-every", "5", "--out", str(out)]
    # A terminal's Ctrl-C: SIGINT at its default disposition in the child, even when this test runs under a shell
    # that started it in the background (which ignores SIGINT, and the ignore is inherited through exec).
    proc = subprocess.Popen(args, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=ENV,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    checkpoint = out / "mine" / "checkpoint.pt"
    deadline = time.monotonic() + 120
    while not checkpoint.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    line = err.strip().splitlines()[-1]
    assert line.startswith("vizkit: interrupted; the scan state after ") and str(checkpoint) in line
    assert line.endswith("--resume") and "continue with: vizkit mine " in line
    done = int(line.split("after ")[1].split(" images")[0])
    assert 0 < done < 400 and not (out / ".mine.lock").exists()
    resumed = subprocess.run([*args, "--resume"], capture_output=True, text=True, env=ENV, timeout=120)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming from {checkpoint}: {done} of 400 images were scanned before" in resumed.stderr


@pytest.mark.slow
def test_torchrun_with_a_skipped_file_and_allow_skipped_exits_0_on_every_rank(tmp_path: Path) -> None:
    import socket

    data = _images(tmp_path / "d", 6, broken=1)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-addr",
                          "127.0.0.1", "--master-port", str(port), "-m", "vizkit", "mine", str(data), "--model",
                          "labnet", "--layer", "features.conv3", "--no-project", "--device", "cpu", "--out",
                          str(tmp_path / "out"), "--allow-skipped"],
                         env=ENV, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    assert "broken0.png" in run.stderr and "ChildFailedError" not in run.stderr and "Traceback" not in run.stderr
    manifest = json.loads((tmp_path / "out" / "mine" / "mine.manifest.json").read_text())
    assert [s["path"] for s in manifest["dataset"]["skipped"]] == [str(data / "broken0.png")]


def test_ctrl_c_without_a_checkpoint_exits_130_and_says_what_would_have_saved_one(tmp_path: Path,
                                                                                 monkeypatch) -> None:
    import vizkit.jobs.invariance
    import vizkit.jobs.mine

    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(vizkit.jobs.mine, "run_mine", interrupted)
    monkeypatch.setattr(vizkit.jobs.invariance, "run_invariance", interrupted)
    code, _, err = _run(["mine", str(tmp_path), "--out", str(tmp_path / "out")])
    assert code == 130 and err.strip().splitlines() == [
        "vizkit: interrupted; no checkpoint was saved (--checkpoint-every N saves one every N images for --resume)"]
    code, _, err = _run(["invariance", str(tmp_path / "x.png"), "--out", str(tmp_path / "out")])
    assert code == 130 and err.strip().splitlines() == ["vizkit: interrupted"]
    assert not (tmp_path / "out").exists()  # made for the run, nothing written, lock gone: removed


def test_allow_skipped_on_a_per_image_command(tmp_path: Path, sample_paths: list[Path]) -> None:
    bad = tmp_path / "notes.jpg"
    bad.write_text("not an image")
    args = ["deconv", str(bad), str(sample_paths[1]), "--model", "lenet5", "--top-k", "1", "--out", str(tmp_path)]
    assert _run(args)[0] == 2
    code, _, err = _run([*args, "--allow-skipped"])
    assert code == 0 and "notes.jpg" in err and "1 written, 1 failed" in err
