"""Text that every page can draw: file names in Chinese, Japanese or Korean (or any script the page font lacks).

Before a figure is saved, ``fix_glyphs`` looks at each of its texts. One whose characters the text's font lacks
gets an installed CJK font as a fallback (matplotlib's font fallback: a list of families) when one is installed,
else the missing characters are shown as escapes (``\\u732b``) rather than as empty boxes. matplotlib's "Glyph ...
missing from font(s)" warning then has nothing to say; ``quiet_glyphs`` silences it for what remains (mathtext).
"""
from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any

from matplotlib import font_manager
from matplotlib.figure import Figure
from matplotlib.text import Text

__all__ = ["CJK_FAMILIES", "cjk_font", "displayable", "fix_glyphs", "quiet_glyphs", "save_figure"]

#: Fonts with CJK glyphs, in the order they are preferred when several are installed.
CJK_FAMILIES = ("Noto Sans CJK JP", "Noto Sans CJK SC", "Noto Sans CJK TC", "Noto Sans CJK KR", "Noto Sans JP",
                "Noto Sans SC", "Source Han Sans", "Source Han Sans SC", "WenQuanYi Zen Hei", "WenQuanYi Micro Hei",
                "Droid Sans Fallback", "AR PL UMing CN", "IPAGothic", "IPAexGothic", "Unifont")


@lru_cache(maxsize=1)
def cjk_font() -> str | None:
    """The first installed family of ``CJK_FAMILIES`` (matplotlib's font manager), or None."""
    names = {entry.name for entry in font_manager.fontManager.ttflist}
    return next((name for name in CJK_FAMILIES if name in names), None)


@lru_cache(maxsize=64)
def _font_file(family: str) -> str:
    return font_manager.findfont(font_manager.FontProperties(family=[family]), fallback_to_default=True)


@lru_cache(maxsize=4096)
def _has(path: str, char: str) -> bool:
    return font_manager.get_font(path).get_char_index(ord(char)) != 0


def _covered(char: str, families: Sequence[str]) -> bool:
    return char.isascii() or not char.isprintable() or any(_has(_font_file(f), char) for f in families)


def displayable(text: str, families: Sequence[str] = ("sans-serif",)) -> str:
    """``text`` with every character none of ``families`` can draw written as an escape (``\\u732b``)."""
    return "".join(c if _covered(c, families) else c.encode("unicode_escape").decode("ascii") for c in text)


def fix_glyphs(fig: Figure) -> None:
    """Make every text of ``fig`` drawable: a CJK fallback font where one is installed and needed, else escapes."""
    extra = cjk_font()
    for text in fig.findobj(Text):
        assert isinstance(text, Text)
        value = text.get_text()
        if value.isascii():
            continue
        families = list(text.get_fontfamily())
        if all(_covered(c, families) for c in value):
            continue
        if extra is not None and all(_covered(c, [*families, extra]) for c in value):
            text.set_fontfamily([*families, extra])
        else:
            text.set_text(displayable(value, families + ([extra] if extra else [])))


@contextmanager
def quiet_glyphs() -> Iterator[None]:
    """No "Glyph ... missing from font(s)" warning on stderr while saving."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"Glyph \d+ .*missing from", category=UserWarning)
        yield


def save_figure(fig: Figure, path: str | Path, **kwargs: Any) -> None:
    """``fig.savefig(path, **kwargs)`` with every text drawable and no glyph warning (PNG pages, thumbnails)."""
    fix_glyphs(fig)
    with quiet_glyphs():
        fig.savefig(path, **kwargs)
