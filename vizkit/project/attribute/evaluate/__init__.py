"""Which attribution method to trust, measured on the user's model and images: deletion and insertion curves,
ROAD, the model-randomisation check, and a ranking over methods."""
from __future__ import annotations

from vizkit.project.attribute.evaluate.curves import Curve, perturbation_curve, pixel_ranks
from vizkit.project.attribute.evaluate.randomisation import randomisation_check, randomised_copy
from vizkit.project.attribute.evaluate.ranking import LOWER_IS_BETTER, MethodRanking, rank_methods
from vizkit.project.attribute.evaluate.road import RoadCurve, linear_imputation, road

__all__ = ["LOWER_IS_BETTER", "Curve", "MethodRanking", "RoadCurve", "linear_imputation", "perturbation_curve",
           "pixel_ranks", "randomisation_check", "randomised_copy", "rank_methods", "road"]
