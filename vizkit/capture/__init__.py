"""Capture what a model computes: forward hooks (activations, max-pool switches), the layer table, receptive fields.

Hooks exist only inside a ``with`` block; every call leaves the model exactly as it was.
"""
from __future__ import annotations

from vizkit.capture.activations import ActivationGrid, activation_grids
from vizkit.capture.filters import FilterStats, filter_stats
from vizkit.capture.layer_table import LayerRow, LayerTable, layer_table
from vizkit.capture.receptive_field import ReceptiveField, receptive_field, receptive_fields
from vizkit.capture.recorder import Recorder, resolve_layers
from vizkit.capture.stages import default_layers
from vizkit.capture.state import preserve_model_state

__all__ = [
    "ActivationGrid", "FilterStats", "LayerRow", "LayerTable", "ReceptiveField", "Recorder", "activation_grids",
    "default_layers", "filter_stats", "layer_table", "preserve_model_state", "receptive_field", "receptive_fields",
    "resolve_layers",
]
