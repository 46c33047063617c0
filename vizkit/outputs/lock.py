"""Claim an output folder before any work: it must exist or be creatable and be writable, and one run at a time
writes one command's outputs there.

``claim_output(out, command)`` creates OUT if needed and takes ``OUT/.<command>.lock``: a file holding the owner's
pid, host and start time, locked with ``flock`` for as long as the run lasts. A second run finds it locked and
refuses, naming the owner's pid. The kernel drops an ``flock`` when its process dies, however it dies, so a lock
file left by a killed run is simply taken over (the note names the dead pid). Everything that goes wrong here is a
one-line ``UserInputError`` (exit 2), raised in well under a second and before any model is loaded.
"""
from __future__ import annotations

import errno
import json
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from vizkit.errors import UserInputError

try:
    import fcntl
except ImportError:  # Windows: no flock; the folder check still runs, runs are not locked
    fcntl = None  # type: ignore[assignment]

__all__ = ["OutputLocked", "check_output_dir", "claim_output", "lock_path"]


class OutputLocked(UserInputError):
    """Another live run holds the lock of this command's outputs in OUT."""


def lock_path(out: str | os.PathLike, command: str) -> Path:
    return Path(out) / f".{command.replace(' ', '-')}.lock"


def check_output_dir(out: str | os.PathLike) -> Path:
    """Create OUT (and its parents) if needed; a one-line error when it is not a folder or cannot be made."""
    folder = Path(out)
    if folder.exists() and not folder.is_dir():
        raise UserInputError(f"--out {folder} exists and is not a folder; choose another --out")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserInputError(f"cannot create the output folder {folder}: {err.strerror or err}; choose another "
                             "--out") from None
    return folder


def _owner(path: Path) -> dict:
    try:
        owner = json.loads(path.read_text(encoding="utf-8") or "{}")
    except (OSError, ValueError):
        return {}
    return owner if isinstance(owner, dict) else {}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def _open(path: Path) -> int:
    try:
        return os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as err:
        if err.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            raise UserInputError(f"the output folder {path.parent} is not writable ({err.strerror}); choose "
                                 "another --out") from None
        raise UserInputError(f"cannot write in the output folder {path.parent}: {err.strerror or err}") from None


def _refuse(path: Path, command: str) -> OutputLocked:
    owner = _owner(path)
    who = f"pid {owner.get('pid', '?')}"
    if owner.get("host") and owner.get("host") != socket.gethostname():
        who += f" on {owner['host']}"
    since = f", started {owner['started']}" if owner.get("started") else ""
    return OutputLocked(f"another 'vizkit {command}' run ({who}{since}) is writing to {path.parent}; wait for it "
                        "to finish or choose another --out")


def _lock(path: Path, command: str) -> tuple[int, dict]:
    """Open and flock ``path`` (retrying when the file was replaced meanwhile); returns the fd and the previous
    owner's record (for the takeover note)."""
    for _ in range(5):
        fd = _open(path)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            os.close(fd)
            if err.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise _refuse(path, command) from None
            raise UserInputError(f"cannot lock {path}: {err.strerror or err}") from None
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:  # the previous owner removed it between our open and our lock
            same = False
        if same:
            return fd, _owner(path)
        os.close(fd)
    raise UserInputError(f"cannot lock {path}: it keeps being replaced; is another run starting?")


@contextmanager
def claim_output(out: str | os.PathLike, command: str, *, lock: bool = True) -> Iterator[list[str]]:
    """Check OUT and, with ``lock``, hold ``OUT/.<command>.lock`` for the block. Yields notes for the user (a stale
    lock taken over). The lock file is removed at the end, and OUT too when this call made it and nothing was
    written (a run that failed on its model leaves no empty folder behind)."""
    made = not Path(out).exists()
    folder = check_output_dir(out)
    try:
        yield from _claimed(folder, command, lock)
    finally:
        if made:
            with suppress(OSError):
                folder.rmdir()  # only when empty


def _claimed(folder: Path, command: str, lock: bool) -> Iterator[list[str]]:
    path = lock_path(folder, command)
    if not lock or fcntl is None:
        _check_writable(folder)
        yield []
        return
    fd, before = _lock(path, command)
    notes = []
    pid = before.get("pid")
    if isinstance(pid, int) and pid != os.getpid():
        state = "no longer running" if not _alive(pid) else "that run has ended"
        notes.append(f"took over the stale lock {path} of pid {pid} ({state})")
    record = {"pid": os.getpid(), "host": socket.gethostname(), "command": command,
              "started": time.strftime("%Y-%m-%d %H:%M:%S")}
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(record).encode(), 0)
    try:
        yield notes
    finally:
        with suppress(OSError):
            os.unlink(path)
        os.close(fd)


def _check_writable(folder: Path) -> None:
    probe = folder / f".vizkit-write-test-{os.getpid()}"
    os.close(_open(probe))
    probe.unlink()
