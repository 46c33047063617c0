"""Page 1 of every PDF says how it was made: this module is the one place that writes it.

``provenance_block`` is the block every command's page 1 carries: model, weights, sha256, what is known about
training, seed, preprocessing, settings and the command. It comes in two parts, ``model_block`` (model, weights,
sha256, training, seed, preprocessing) and ``run_block`` (settings, command), so page 1 can put the first beside
the image; ``compact=True`` writes the same fields in fewer lines, for pages whose pictures need the room.
``page_notes``: the notes a page shows, run-level first, each said once. Commands add their own result notes; the
random-init warning and run-level notes come only from here.
"""
from __future__ import annotations

from collections.abc import Iterable

from vizkit.outputs.info import ReportInfo
from vizkit.render.kit.page import FONT, Cursor, format_value

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


def _training(c: Cursor, info: ReportInfo) -> None:
    line, colour = training_line(info)
    if colour:
        c.paragraph(line, weight="bold", color=colour)
    else:
        c.paragraph(line)


def model_block(c: Cursor, info: ReportInfo) -> None:
    """Heading "Model": model, weights source, sha256, training line, seed; then heading "Preprocessing"."""
    c.heading("Model")
    c.paragraph(f"model: {info.model}")
    c.paragraph(f"weights: {info.weights}")
    c.paragraph(f"weights sha256: {info.weights_sha256 or 'n/a'}", size=FONT - 1)
    _training(c, info)
    if info.seed is not None:
        c.line(f"seed: {info.seed}")
    c.heading("Preprocessing")
    for key, value in info.preprocessing.items():
        c.paragraph(f"{key}: {format_value(value)}")


def run_block(c: Cursor, info: ReportInfo, *, max_lines: int = 3) -> None:
    """Heading "Settings": one line per option, then the command line."""
    c.heading("Settings")
    for key, value in info.settings.items():
        c.paragraph(f"{key}: {format_value(value)}", max_lines=max_lines)
    c.paragraph(f"command: {command_text(info)}", max_lines=max_lines)


def _joined(values: dict) -> str:
    return ", ".join(f"{k}: {format_value(v)}" for k, v in values.items()) or "none"


def provenance_block(c: Cursor, info: ReportInfo, *, compact: bool = False, max_lines: int = 3) -> None:
    """The whole block at the cursor: ``model_block`` then ``run_block``; ``compact``: the same fields, smaller,
    without headings; on a full-width cursor in two columns (model and weights; preprocessing, settings and
    command)."""
    if not compact:
        model_block(c, info)
        run_block(c, info, max_lines=max_lines)
        return
    small = FONT - 0.5
    two = c.width > 5.0  # a full-width block: two columns; beside an image: one
    half = (c.width - 0.3) / 2 if two else c.width
    left = Cursor(c.fig, c.x, c.y, half)
    right = Cursor(c.fig, c.x + half + 0.3, c.y, half) if two else left
    left.paragraph(f"model: {info.model}  \u00b7  weights: {info.weights}", size=small, max_lines=2)
    left.paragraph(f"weights sha256: {info.weights_sha256 or 'n/a'}" + ("" if info.seed is None else
                                                                        f"  \u00b7  seed: {info.seed}"), size=small)
    _training(left, info)
    for name, value in (("preprocessing", _joined(info.preprocessing)), ("settings", _joined(info.settings)),
                        ("command", command_text(info))):
        right.paragraph(f"{name}: {value}", size=small, color="0.3", max_lines=2)
    c.y = max(left.y, right.y)


def notes_block(c: Cursor, notes: list[str], *, max_lines: int = 4) -> None:
    """Heading "Notes" and one bullet per note ("none" when there are none)."""
    c.heading("Notes")
    for note in notes or ["none"]:
        c.paragraph(f"\u2022 {note}", max_lines=max_lines)


__all__ = ["RANDOM_INIT_NOTE", "command_text", "model_block", "notes_block", "page_notes", "provenance_block",
           "run_block", "training_line"]
