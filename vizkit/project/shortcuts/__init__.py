"""Find Clever-Hans shortcuts: attribution maps of a whole class, SpRAy clustering, and which cluster is compact."""
from __future__ import annotations

from vizkit.project.shortcuts.clusters import ClassAnalysis, ClusterStats, analyse_class, box_share
from vizkit.project.shortcuts.maps import DEFAULT_METHOD, METHODS, attribution_maps
from vizkit.project.shortcuts.spray import Spectral, pool_maps, spectral_clusters

__all__ = ["DEFAULT_METHOD", "METHODS", "ClassAnalysis", "ClusterStats", "Spectral", "analyse_class",
           "attribution_maps", "box_share", "pool_maps", "spectral_clusters"]
