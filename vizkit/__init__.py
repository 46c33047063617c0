"""vizkit: see what a trained convolutional network learned.

The package reads as the pipeline: ``vizkit.load`` (models, images) -> ``vizkit.capture`` (hooks, layer table)
-> ``vizkit.project`` (deconvnet) -> ``vizkit.render`` (PDF, arrays, manifest).
"""
from __future__ import annotations

__all__: list[str] = []
