"""Feature visualisation by optimisation: the image a unit, a class or any function of the activations wants
to see (Olah et al. 2017; MACO, Fel et al. 2023; feature accentuation, Hamblin et al. 2024), many at once."""
from __future__ import annotations

from vizkit.project.dream.objectives import (
    OUTPUT,
    Objective,
    channel,
    class_logit,
    neuron,
    objective,
    parse_objective,
    weighted,
)
from vizkit.project.dream.optimise import DreamSettings, batches_needed, dream, element_generator
from vizkit.project.dream.reference import reference, reference_values
from vizkit.project.dream.result import DreamResult
from vizkit.project.dream.spectrum import (
    SHIPPED_SPECTRUM,
    magnitude_for,
    shipped_spectrum,
    spectrum_from,
    spectrum_photos,
)
from vizkit.project.dream.transforms import TransformSettings

__all__ = [
    "OUTPUT", "SHIPPED_SPECTRUM", "DreamResult", "DreamSettings", "Objective", "TransformSettings", "batches_needed",
    "channel", "class_logit", "dream", "element_generator", "magnitude_for", "neuron", "objective",
    "parse_objective", "reference", "reference_values", "shipped_spectrum", "spectrum_from", "spectrum_photos",
    "weighted",
]
