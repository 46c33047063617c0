"""Errors a user can act on. Each carries the CLI exit code it maps to (documented in the README)."""
from __future__ import annotations


class VizkitError(Exception):
    """Base class: a problem vizkit can explain in one line."""

    exit_code = 1


class UserInputError(VizkitError):
    """Bad input or usage: unreadable image, unknown model or layer, missing weights. Exit code 2."""

    exit_code = 2


class ImageError(UserInputError):
    """An image file that cannot be read or decoded."""


class VideoError(UserInputError):
    """A video file that cannot be opened, has no decodable frames, or whose codec OpenCV lacks."""


class ModelError(UserInputError):
    """Unknown model name, unknown layer, or weights that cannot be found or loaded."""


def close_matches(name: str, candidates: list[str], n: int = 5) -> str:
    """A short 'did you mean' suffix for error messages."""
    import difflib

    hits = difflib.get_close_matches(name, candidates, n=n, cutoff=0.5)
    return f" Did you mean: {', '.join(hits)}?" if hits else ""
