"""Progress of long runs on stderr: the one reporter every command uses.

A ``Progress`` draws one line for the task under way (label, done/total, rate and ETA for images, done/total for
units), redrawn in place only when its stream is a terminal. Anywhere else (a log file, CI, a pipe) nothing is
redrawn: each finished task gives one summary line. ``note(line)`` prints a line that must stay (a skipped file, a
checkpoint) without breaking the bar. Nothing here ever writes to stdout.

Library loops report through the module functions ``task(...)`` and ``note(...)``; they reach the reporter made
current with ``reporting(...)`` (the CLI does this for every command) and do nothing otherwise, so Python code
stays quiet unless it asks: ``with reporting(): run_mine(config)``.
"""
from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TextIO

__all__ = ["Progress", "Task", "current", "note", "reporting", "task", "warn"]

log = logging.getLogger("vizkit")

RATE_UNITS = frozenset({"images", "frames"})  # a rate and an ETA are shown for these; units and checkpoints count


def _duration(seconds: float) -> str:
    whole = max(0, round(seconds))
    hours, rest = divmod(whole, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


class Task:
    """One counted piece of work (``update(done)`` or ``advance(n)``); ``close()`` ends it with the summary line
    (unless ``summary`` is False: a task inside a bigger one that reports its own lines)."""

    def __init__(self, owner: Progress | None, label: str, total: int | None, unit: str, summary: bool,
                 start: int = 0) -> None:
        self.owner, self.label, self.total, self.unit, self.summary = owner, label, total, unit, summary
        self.done = self.first = start  # first: done by an earlier run (resume); the rate counts only this run
        self.started = owner.clock() if owner is not None else 0.0
        self.detail = ""
        self.closed = False

    def update(self, done: int, total: int | None = None, detail: str = "") -> None:
        if total is not None:
            self.total = total
        self.done, self.detail = done, detail
        if self.owner is not None:
            self.owner._draw(self)

    def advance(self, n: int = 1, detail: str = "") -> None:
        self.update(self.done + n, detail=detail)

    def counter(self, detail: str = "") -> Callable[[int, int], None]:
        """A ``progress(done, total)`` callback for one part of this task: its ``done`` counts from where the task
        stands now (a layer's units inside all layers' units)."""
        base = self.done

        def report(done: int, _total: int) -> None:
            self.update(base + done, detail=detail)

        return report

    def rate(self) -> float | None:
        """Per second, over this run's part of the work (None before anything was done)."""
        if self.owner is None:
            return None
        elapsed = self.owner.clock() - self.started
        counted = self.done - self.first
        return counted / elapsed if elapsed > 0 and counted > 0 else None

    def line(self) -> str:
        total = f"/{self.total}" if self.total else ""
        text = f"{self.label}: {self.done}{total} {self.unit}"
        rate = self.rate()
        if rate is not None and self.unit in RATE_UNITS:
            text += f", {rate:.1f} {self.unit}/s"
            if self.total and self.total > self.done:
                text += f", ETA {_duration((self.total - self.done) / rate)}"
        return f"{text}  {self.detail}" if self.detail else text

    def summary_line(self) -> str:
        elapsed = (self.owner.clock() - self.started) if self.owner is not None else 0.0
        text = f"{self.label}: {self.done} {self.unit} in {_duration(elapsed)}"
        rate = self.rate()
        if rate is not None and self.unit in RATE_UNITS:
            text += f" ({rate:.1f} {self.unit}/s)"
        if self.first:
            text += f"; {self.first} done by an earlier run"
        return text

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self.owner is not None:
            self.owner._finish(self)

    def __enter__(self) -> Task:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        if exc_type is not None and not self.closed:  # interrupted or failed: no summary of a part-done task
            self.closed = True
            if self.owner is not None:
                self.owner._clear()
        self.close()


class Progress:
    """The reporter: ``stream`` (default stderr); ``live``: redraw in place (default: ``stream.isatty()``);
    ``show`` False draws no bars and no summaries (torchrun ranks > 0) but still prints notes."""

    def __init__(self, stream: TextIO | None = None, *, live: bool | None = None, show: bool = True,
                 clock: Callable[[], float] = time.monotonic, interval: float = 0.1) -> None:
        self.stream = stream if stream is not None else sys.stderr
        isatty = getattr(self.stream, "isatty", None)
        self.live = bool(isatty()) if live is None and callable(isatty) else bool(live)
        self.show, self.clock, self.interval = show, clock, interval
        self._drawn = False        # a bar is on the terminal's current line
        self._last = float("-inf")

    def task(self, label: str, total: int | None = None, unit: str = "images", summary: bool = True,
             start: int = 0) -> Task:
        return Task(self, label, total, unit, summary, start)

    def note(self, line: str) -> None:
        self._clear()
        self._write(line + "\n")

    def _write(self, text: str) -> None:
        try:
            self.stream.write(text)
            self.stream.flush()
        except (OSError, ValueError):  # a closed or broken stderr must not stop the run
            pass

    def _clear(self) -> None:
        if self._drawn:
            self._write("\r\x1b[K")
            self._drawn = False

    def _draw(self, task: Task, force: bool = False) -> None:
        if not (self.show and self.live):
            return
        now = self.clock()
        if not force and now - self._last < self.interval and task.done != task.total:
            return
        self._last = now
        self._write("\r\x1b[K" + task.line())
        self._drawn = True

    def _finish(self, task: Task) -> None:
        self._clear()
        if self.show and task.summary and (task.done or task.total):
            self._write(task.summary_line() + "\n")


_current: ContextVar[Progress | None] = ContextVar("vizkit_progress", default=None)


def current() -> Progress | None:
    """The reporter of the run under way (None outside ``reporting``)."""
    return _current.get()


@contextmanager
def reporting(progress: Progress | None = None) -> Iterator[Progress]:
    """Make ``progress`` (default: a new one on stderr) the reporter of ``task``/``note`` inside the block."""
    reporter = progress if progress is not None else Progress()
    token = _current.set(reporter)
    try:
        yield reporter
    finally:
        reporter._clear()
        _current.reset(token)


def task(label: str, total: int | None = None, unit: str = "images", summary: bool = True, start: int = 0) -> Task:
    """A task on the current reporter (``start``: units done by an earlier run); without a reporter a silent task
    (the loop reports to nobody)."""
    reporter = _current.get()
    return (reporter.task(label, total, unit, summary, start) if reporter is not None
            else Task(None, label, total, unit, summary, start))


def note(line: str) -> None:
    """A line that stays, through the current reporter; without one it goes to the ``vizkit`` logger (INFO)."""
    reporter = _current.get()
    if reporter is not None:
        reporter.note(line)
    else:
        log.info("%s", line)


def warn(line: str) -> None:
    """A line the user must see: through the current reporter, else the ``vizkit`` logger (WARNING, shown by
    default)."""
    reporter = _current.get()
    if reporter is not None:
        reporter.note(line)
    else:
        log.warning("%s", line)
