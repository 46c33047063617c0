"""Plain data produced by the projection step and consumed by render/: one result type per command, all here.

No torch objects inside: a result can be pickled, compared and rendered without the model. The writer
(``vizkit.render.writer.write_outputs``) picks a command's files by the result's type.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # annotations only: importing them here would pull torch into every reader of this module
    from vizkit.capture.activations import ActivationGrid
    from vizkit.capture.filters import FilterStats
    from vizkit.load.checkpoints import CheckpointList
    from vizkit.project.attribute.result import AttributeResult
    from vizkit.project.dream.result import DreamResult
    from vizkit.project.evolution import LayerEvolution
    from vizkit.project.invariance import InvarianceSweep
    from vizkit.project.mine_heatmaps import UnitHeatmaps
    from vizkit.project.mine_projection import UnitTopProjections
    from vizkit.project.occlusion import OcclusionMaps
    from vizkit.project.sanity import SanityResult
    from vizkit.project.shortcuts.result import ShortcutsResult  # noqa: F401  (re-exported lazily below)
    from vizkit.scan.topk import MineResult


@dataclass
class UnitProjection:
    """One feature map's projection to pixel space.

    channel: feature-map index in the layer; position: (y, x) of the strongest activation on the layer's output
    grid; activation: its value; projection: (C, H, W) float32, raw (unnormalised) deconvnet output;
    box: (y0, y1, x0, x1) half-open pixel box of the unit's receptive field clipped to the image, or None when the
    receptive field is not known (then the whole image is the patch).
    """

    channel: int
    position: tuple[int, int]
    activation: float
    projection: np.ndarray
    box: tuple[int, int, int, int] | None = None


@dataclass
class LayerProjections:
    """The top-K feature maps of one layer for one image.

    activation_maps: (K, h, w) float32, the layer's output for the selected channels (same order as units).
    image_dependent: False when nothing before this layer depends on the forward pass in the backward
    direction (no max-pool switch, no gate, no normalisation statistic): the projections are then the same for
    every image that activates the same units.
    """

    layer: str
    mode: str
    units: list[UnitProjection]
    activation_maps: np.ndarray
    image_dependent: bool
    note: str = ""


@dataclass
class AuditEntry:
    """One intercepted operation: how many calls the deconvnet saw and which backward rule it applied."""

    op: str
    rule: str
    count: int


@dataclass
class Prediction:
    index: int
    name: str
    probability: float


@dataclass
class DeconvResult:
    """Everything `vizkit deconv` renders for one image.

    input: (1, C, H, W) float32 exactly as fed to the model; image: (H, W, 3) uint8 for display (the
    preprocessed image, de-normalised). switches: max-pool name -> (1, C, h, w) int64 flat indices into the pool's
    input (per channel) of each window's maximum; only when asked for (``--save-switches``).
    """

    input: np.ndarray
    image: np.ndarray
    layers: list[LayerProjections]
    predictions: list[Prediction] = field(default_factory=list)
    audit: list[AuditEntry] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    switches: dict[str, np.ndarray] = field(default_factory=dict)


@dataclass
class GradCamResult:
    """Everything ``vizkit gradcam`` writes for one image (T targets; float32 arrays unless stated).

    input (1, C, H, W) exactly as fed to the model; image (H, W, 3) uint8 for display; targets (T,) int64;
    class_names (T,) their names; scores (T,) softmax probabilities; cam_raw (T, h, w); cam (T, H, W) in [0, 1];
    guided_backprop / guided_gradcam (T, C, H, W).
    """

    input: np.ndarray
    image: np.ndarray
    layer: str
    targets: np.ndarray
    class_names: list[str]
    scores: np.ndarray
    cam_raw: np.ndarray
    cam: np.ndarray
    guided_backprop: np.ndarray
    guided_gradcam: np.ndarray
    predictions: list[Prediction] = field(default_factory=list)
    audit: list[AuditEntry] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def zero_cam(self) -> np.ndarray:
        """(T,) bool: the ReLU removed every location of that target's CAM (left all zero, not scaled)."""
        return ~np.any(self.cam_raw > 0, axis=(1, 2))


#: Colour scales of activation pages: one per page (maps comparable) or each map on its own range.
SCALES = ("shared", "map")


@dataclass
class ActivationsResult:
    """Everything ``vizkit activations`` writes for one image: the input as fed (1, C, H, W) float32, the display
    image (H, W, 3) uint8 and one grid of strongest feature maps per layer. ``scale``: the colour scale."""

    input: np.ndarray
    image: np.ndarray
    grids: list[ActivationGrid]
    scale: str = "shared"
    notes: list[str] = field(default_factory=list)


@dataclass
class OcclusionResult:
    """Everything ``vizkit occlusion`` writes for one image: the maps, the display image, the unoccluded top-5,
    the sanity checks (None when not run) and the class names for the labels."""

    maps: OcclusionMaps
    image: np.ndarray
    predictions: list[Prediction]
    sanity: list[SanityResult] | None
    notes: list[str] = field(default_factory=list)
    class_names: Sequence[str] | None = None


@dataclass
class FiltersResult:
    """``vizkit filters``: per-layer filter statistics (every analysed layer) and which layers get a picture page."""

    stats: list[FilterStats]
    pictured: list[str]
    notes: list[str] = field(default_factory=list)


@dataclass
class ReportResult:
    """``vizkit report`` for one image: every method's result, computed from one preprocessed input.

    grids: the feature maps of the deconvnet's layers (same order); gradcam, occlusion: at their own layers;
    filters: model-level, the same in every image's report."""

    deconv: DeconvResult
    grids: list[ActivationGrid]
    gradcam: GradCamResult
    occlusion: OcclusionResult
    filters: FiltersResult
    notes: list[str] = field(default_factory=list)
    attribution: AttributeResult | None = None  # --method
    dream: DreamResult | None = None  # the dream column: ranked units and the top class (vizkit.jobs.report_dream)


@dataclass
class LayerDreams:
    """``vizkit mine --dream``: what each rendered unit of one layer wants to see. ``channels`` (U,) int64;
    ``images`` (U, 3, S, S) float32 in [0, 1], each optimised for its channel's mean activation
    (``vizkit.project.dream``); ``scores`` (U,) float32, that objective on the final image."""

    channels: np.ndarray
    images: np.ndarray
    scores: np.ndarray


@dataclass
class MineOutput:
    """``vizkit mine`` for one dataset: the scan (per layer the exact top-K images of every unit), the rendered
    units' projections (pass 2; empty with ``--no-project``) and what page 1 must say about them; with
    ``--dream``, each rendered unit's dream per layer and the settings that made them (for the manifest)."""

    result: MineResult
    projections: list[UnitTopProjections] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    heatmaps: list[UnitHeatmaps] = field(default_factory=list)  # --rank relevance: conditional heatmaps (pass 2)
    dreams: dict[str, LayerDreams] = field(default_factory=dict)
    dream_settings: dict = field(default_factory=dict)


@dataclass
class InvarianceResult:
    """Everything ``vizkit invariance`` writes for one image: the sweep (curves per transform), the display image
    (H, W, 3) uint8, thumbnails of transformed copies per transform ((amount, (H, W, 3) uint8) along the axis), the
    original's top-5 and the class names for the labels."""

    sweep: InvarianceSweep
    image: np.ndarray
    thumbnails: dict[str, list[tuple[float, np.ndarray]]]
    predictions: list[Prediction]
    notes: list[str] = field(default_factory=list)
    class_names: Sequence[str] | None = None


Box = tuple[int, int, int, int]


@dataclass
class Cell:
    """One unit at one checkpoint of ``vizkit evolve``: its strongest activation over the dataset (value, image,
    position on the layer's grid), the receptive-field box, the deconvnet projection (C, h, w) and the image patch
    (h, w, 3)."""

    value: float
    image_index: int
    position: tuple[int, int]
    box: Box
    projection: np.ndarray
    patch: np.ndarray


@dataclass
class EvolveResult:
    """Everything ``vizkit evolve`` writes (one folder per run). cells[layer][t][u]: unit ``units[layer][u]`` at
    checkpoint t (None when it had no entry). ``patches``: the pages show each cell's image patch beside it."""

    checkpoints: CheckpointList
    paths: list[str]
    layers: list[LayerEvolution]
    units: dict[str, list[int]]
    cells: dict[str, list[list[Cell | None]]]
    skipped_images: list[tuple[str, str]]
    skipped_checkpoints: list[str]
    preprocessing: dict
    images_scanned: int = 0
    patches: bool = False
    notes: list[str] = field(default_factory=list)

    def labels(self) -> list[str]:
        """Column labels: '#3' (the epoch/step number) when ordered by name, else the file stems."""
        cp = self.checkpoints
        return [f"#{n}" if n is not None else p.stem for p, n in zip(cp.paths, cp.numbers, strict=True)]


def __getattr__(name: str) -> type:
    """``ShortcutsResult`` lives beside its analysis (``vizkit.project.shortcuts.result``); it is re-exported here
    lazily so that reading the other result types does not import scikit-learn."""
    if name == "ShortcutsResult":
        from vizkit.project.shortcuts.result import ShortcutsResult

        return ShortcutsResult
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
