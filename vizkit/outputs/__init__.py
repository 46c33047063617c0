"""The ground floor for writing files: atomic folders, manifests, provenance records and npz archives; and what a
long run shows while it writes: the claim on its output folder (``lock``) and its progress on stderr
(``progress``).

``vizkit.render`` (every command's pages) and ``vizkit.lab`` (training runs) both stand on it; it imports neither.
"""
from __future__ import annotations

from vizkit.outputs.atomic import atomic_dir, output_folder
from vizkit.outputs.info import ReportInfo
from vizkit.outputs.manifest import write_manifest
from vizkit.outputs.npz import write_npz

__all__ = ["ReportInfo", "atomic_dir", "output_folder", "write_manifest", "write_npz"]
