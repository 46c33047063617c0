"""The one writer of every command's outputs: ``write_outputs(result, info, out_dir, stem, timings)``.

A command's files are chosen by its result type: its row in ``vizkit.commands`` names the render module whose
``<command>_document`` says which files it writes (``Document``); this module writes them into the per-image (or
per-run) folder atomically, beside other commands' files, and the manifest last. The one PDF writer is
``vizkit.render.kit.pdf.write_pdf``.
"""
from __future__ import annotations

import importlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from vizkit.commands import command_for_result
from vizkit.outputs.atomic import atomic_dir, output_folder
from vizkit.outputs.info import ReportInfo
from vizkit.outputs.manifest import write_manifest


@dataclass
class Document:
    """What one command writes: ``files`` (name, writer of that file), each written in order, then ``manifest``.
    ``folder``: the folder name when the caller gives no stem (model-level outputs such as filters).
    ``manifest_extra``: keys the manifest adds after the common ones; the file writers may fill it in as they run
    (e.g. a page count), since the manifest is written after them."""

    files: list[tuple[str, Callable[[Path], object]]]
    manifest: str
    folder: str | None = None
    manifest_extra: dict[str, object] = field(default_factory=dict)


def document(result: object, info: ReportInfo) -> Document:
    """The files of ``result``'s command: the render module and function of the row in ``vizkit.commands`` whose
    result type ``result`` is (by name). Only that one module is imported, on first use: matplotlib loads only when
    something is rendered; shortcuts' pulls scikit-learn."""
    command = command_for_result([cls.__name__ for cls in type(result).__mro__])
    if command is None:
        raise TypeError(f"no writer for {type(result).__name__}: add its command's row to vizkit.commands")
    make: Callable[[object, ReportInfo], Document] = getattr(importlib.import_module(command.render),
                                                             command.document)
    return make(result, info)


def write_outputs(result: object, info: ReportInfo, out_dir: str | Path, stem: str | None = None,
                  timings: dict[str, float] | None = None) -> Path:
    """Write ``result``'s files into ``out_dir/stem/`` (a per-image folder; model-level results use their own
    folder name) atomically, then its manifest with ``timings`` plus a ``render`` entry. Returns the folder."""
    start = time.perf_counter()
    doc = document(result, info)
    name = stem if stem is not None else doc.folder
    if name is None:
        raise ValueError(f"{type(result).__name__} is a per-image result: give the image's folder name (stem)")
    final = output_folder(out_dir, name)
    with atomic_dir(final) as tmp:
        for filename, write in doc.files:
            write(tmp / filename)
        write_manifest(tmp, info, {**(timings or {}), "render": time.perf_counter() - start}, doc.manifest,
                       extra=doc.manifest_extra)
    return final


__all__ = ["Document", "document", "write_outputs"]
