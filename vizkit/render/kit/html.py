"""The shell of every offline HTML page vizkit writes (report, mine, evolve and shortcuts galleries): one style
sheet, and a script that reports in ``<body data-loaded="N/M">`` how many images the browser decoded, so a
headless browser can check a gallery. Relative links only, nothing remote, no server."""
from __future__ import annotations

import html
from collections.abc import Sequence
from pathlib import Path

from vizkit.outputs.info import vizkit_version

#: Counts the images that loaded (the Chromium tests read it), in every offline gallery.
LOADED_SCRIPT = """<script>
window.addEventListener('load', function () {
  var imgs = Array.prototype.slice.call(document.images);
  var ok = imgs.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length;
  document.body.setAttribute('data-loaded', ok + '/' + imgs.length);
  document.getElementById('loaded').textContent = ok + ' of ' + imgs.length + ' images loaded';
});
</script>"""

#: One style sheet for every gallery; each command uses its own classes (report: nav, .summary; mine: .units,
#: .entries; evolve: .grid, .changed; shortcuts: .tiles, .compact).
STYLE = """<style>
body { font-family: sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
#loaded { color: #888; font-size: small; } .summary { color: #555; }
nav li.l2 { margin-left: 1.5em; list-style: circle; }
figure { margin: 1em 0 2em; } figure img { width: 100%; border: 1px solid #ccc; }
table { border-collapse: collapse; }
td, th { padding: 2px 8px; border-bottom: 1px solid #ddd; text-align: right; }
td:first-child, th:first-child { text-align: left; }
.units { display: flex; flex-wrap: wrap; gap: 12px; } .unit { border: 1px solid #ccc; padding: 6px; }
.unit img, .entry img { width: 112px; height: 112px; object-fit: contain; image-rendering: pixelated;
  background: #eee; }
.entries { display: grid; grid-template-columns: repeat(auto-fill, minmax(250px, 1fr)); gap: 14px; }
.entry { font-size: small; word-break: break-all; } .dead { color: firebrick; }
.grid td { text-align: center; font-size: small; vertical-align: top; }
.grid img { width: 96px; height: 96px; object-fit: contain; image-rendering: pixelated; background: #eee; }
.changed { color: firebrick; font-weight: bold; }
.tiles { display: flex; flex-wrap: wrap; gap: 6px; } .tile { width: 112px; font-size: 10px; text-align: center; }
.tile img { width: 112px; height: 112px; image-rendering: pixelated; border: 1px solid #ccc; }
.compact { color: #b00; font-weight: bold; }
</style>"""


def write_html_page(path: Path, title: str, body: Sequence[str], *, script: str = LOADED_SCRIPT) -> Path:
    """Write ``path``: the shell (title, style, the loaded-images line, a footer with vizkit's version) around
    ``body`` (HTML fragments, already escaped); ``script`` replaces ``LOADED_SCRIPT`` on a page that reports its
    images itself (the mine gallery's lazily loaded layer pages)."""
    text = "\n".join(["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
                      f"<title>{html.escape(title)}</title>", STYLE, "</head><body>",
                      f"<h1>{html.escape(title)}</h1>", '<p id="loaded"></p>', *body,
                      f"<footer><p>vizkit {html.escape(vizkit_version())}</p></footer>", script,
                      "</body></html>"])
    path.write_text(text, encoding="utf-8")
    return path


__all__ = ["LOADED_SCRIPT", "STYLE", "write_html_page"]
