"""Page 1 of every PDF says how it was made: this module is the one place that writes it.

``model_block`` (model, weights, hash, what is known about training, seed, preprocessing), ``run_block`` (settings,
command) and ``page_notes``: the notes a page shows, run-level first, each said once. Commands add their own
result notes; the random-init warning and run-level notes come only from here.
"""
from __future__ import annotations

from collections.abc import Iterable

from vizkit.render.info import ReportInfo
from vizkit.render.pages import FONT, Cursor, format_value

RANDOM_INIT_NOTE = "random init weights: the pictures show the architecture's bias, not anything learned."
WARN = "firebrick"


def page_notes(info: ReportInfo | None, *notes: Iterable[str]) -> list[str]:
    """The random-init warning (when the weights are random), the run's notes, then ``notes``; each once.

    The warning is owned here: another note that also says "random init" is dropped rather than said twice."""
    head = [RANDOM_INIT_NOTE] if info is not None and info.pretrained is False else []
    rest = [*(info.notes if info is not None else []), *(n for group in notes for n in group)]
    if head:
        rest = [n for n in rest if "random init" not in n.lower()]
    return list(dict.fromkeys(head + rest))


def training_line(info: ReportInfo) -> tuple[str, str | None]:
    """What is known about the weights' training, and a warning colour when it is bad or unknown."""
    if info.pretrained is False:
        seed = "" if info.seed is None else f", seed {info.seed}"
        return f"pretrained: NO (random init weights{seed})", WARN
    if info.checksum_match is True:
        return "pretrained: yes (the file matches its published checksum)", None
    if info.checksum_match is False:
        return "pretrained: unknown: the file does NOT match its published checksum", WARN
    if info.pretrained:
        return "pretrained: published weights by name, not verified", None
    return "pretrained: unknown, not verified (no published checksum)", None


def command_text(info: ReportInfo) -> str:
    return info.command if isinstance(info.command, str) else " ".join(str(a) for a in info.command)


def model_block(c: Cursor, info: ReportInfo, *, preprocessing: bool = True) -> None:
    """Heading "Model": model, weights source, sha256, training line, seed; then the preprocessing."""
    c.heading("Model")
    c.paragraph(f"model: {info.model}")
    c.paragraph(f"weights: {info.weights}")
    c.paragraph(f"weights sha256: {info.weights_sha256 or 'n/a'}", size=FONT - 1)
    line, colour = training_line(info)
    if colour:
        c.paragraph(line, weight="bold", color=colour)
    else:
        c.paragraph(line)
    if info.seed is not None:
        c.line(f"seed: {info.seed}")
    if preprocessing:
        c.heading("Preprocessing")
        for key, value in info.preprocessing.items():
            c.paragraph(f"{key}: {format_value(value)}")


def run_block(c: Cursor, info: ReportInfo, *, heading: bool = True, max_lines: int = 3) -> None:
    """Heading "Settings": one line per option, then the command line."""
    if heading:
        c.heading("Settings")
    for key, value in info.settings.items():
        c.paragraph(f"{key}: {format_value(value)}", max_lines=max_lines)
    c.paragraph(f"command: {command_text(info)}", max_lines=max_lines)


def notes_block(c: Cursor, notes: list[str], *, max_lines: int = 4) -> None:
    """Heading "Notes" and one bullet per note ("none" when there are none)."""
    c.heading("Notes")
    for note in notes or ["none"]:
        c.paragraph(f"\u2022 {note}", max_lines=max_lines)


__all__ = ["RANDOM_INIT_NOTE", "command_text", "model_block", "notes_block", "page_notes", "run_block",
           "training_line"]
