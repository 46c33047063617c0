"""OUT/shortcuts/: shortcuts.json, shortcuts.npz, shortcuts.pdf, html/ and shortcuts.manifest.json (last), written
by the one writer (``vizkit.render.writer.write_outputs``) atomically: a failed run leaves the previous folder as
it was."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from vizkit.project.shortcuts.result import ShortcutsResult
from vizkit.render.info import ReportInfo
from vizkit.render.writer import Document

MANIFEST = "shortcuts.manifest.json"


def npz_arrays(result: ShortcutsResult) -> dict[str, np.ndarray]:
    """The arrays of shortcuts.npz (``ShortcutsResult.npz_arrays``)."""
    return result.npz_arrays()


def _write_json(result: ShortcutsResult, path: Path) -> None:
    path.write_text(json.dumps(result.to_json(), indent=2) + "\n", encoding="utf-8")


def _write_npz(result: ShortcutsResult, path: Path) -> None:
    np.savez_compressed(path, **npz_arrays(result))  # type: ignore[arg-type]


def shortcuts_document(result: ShortcutsResult, info: ReportInfo) -> Document:
    """``shortcuts/``: shortcuts.json, shortcuts.npz, shortcuts.pdf, html/, then shortcuts.manifest.json."""
    from vizkit.render.shortcuts_html import write_gallery
    from vizkit.render.shortcuts_pdf import write_shortcuts_pdf

    return Document([("shortcuts.json", lambda p: _write_json(result, p)),
                     ("shortcuts.npz", lambda p: _write_npz(result, p)),
                     ("shortcuts.pdf", lambda p: write_shortcuts_pdf(p, result, info)),
                     ("html", lambda p: write_gallery(p, result, result.pictures))],
                    manifest=MANIFEST, folder="shortcuts")


__all__ = ["MANIFEST", "npz_arrays", "shortcuts_document"]
