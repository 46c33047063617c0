"""Find Clever-Hans shortcuts: attribution maps of a whole class, SpRAy clustering, clusters merged when they share a
place and a pattern, each cluster's evidence (transplant, deletion, consistency), and a verdict fitted on a family
of labs (``judge``)."""
from __future__ import annotations

from vizkit.project.shortcuts.judge import ClassVerdict, ClusterVerdict, judge, judge_class
from vizkit.project.shortcuts.maps import DEFAULT_METHOD, METHODS, attribution_maps
from vizkit.project.shortcuts.result import box_share
from vizkit.project.shortcuts.spray import Spectral, pool_maps, spectral_clusters
from vizkit.project.shortcuts.verdict import Thresholds, load_thresholds

__all__ = ["DEFAULT_METHOD", "METHODS", "ClassVerdict", "ClusterVerdict", "Spectral", "Thresholds",
           "attribution_maps", "box_share", "judge", "judge_class", "load_thresholds", "pool_maps",
           "spectral_clusters"]
