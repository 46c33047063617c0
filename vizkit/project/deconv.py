"""Project feature maps of any layer back to pixel space with the Zeiler–Fergus deconvnet.

One forward pass per image, under ``DeconvRules``, records every requested layer; each unit is then projected by one
backward pass from that layer (``retain_graph``), seeded with the unit's activation and zero elsewhere. Where the
network is spatially local up to the layer, a single unit's projection only depends on its receptive-field cone, so
it is computed on a crop of the input around that cone (aligned to the layer's cumulative stride so every grid lines
up): the same numbers for a fraction of the arithmetic (docs/DESIGN.md, "Speed").
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
from torch import nn

from vizkit.capture.recorder import Recorder
from vizkit.capture.state import preserve_model_state
from vizkit.errors import UserInputError
from vizkit.project.results import AuditEntry, LayerProjections, UnitProjection
from vizkit.project.rules import IMAGE_DEPENDENT_OPS, DeconvRules, check_interceptable

if TYPE_CHECKING:
    from vizkit.capture.receptive_field import ReceptiveField

MODES = ("max", "map")
ENGINES = ("autograd", "explicit")  # autograd with deconvnet rules (any graph); explicit layer-by-layer (chains)
CROP_MAX_AREA = 0.5  # crop only when the cone covers at most this share of the image; else full backward is as cheap


@dataclass(frozen=True)
class Unit:
    """A feature map (channel) of a layer and, in mode ``max``, the (y, x) of the activation to project."""

    channel: int
    position: tuple[int, int] | None = None


@dataclass
class Capture:
    """One forward pass under the deconvnet rules: the input leaf, recorded layer outputs and what ran before them."""

    x: torch.Tensor
    outputs: dict[str, torch.Tensor]
    logits: torch.Tensor | None
    rules: DeconvRules
    ops_before: dict[str, Counter[str]] = field(default_factory=dict)
    switches: dict[str, torch.Tensor] = field(default_factory=dict)  # only when recorded (switches=True)

    def image_dependent(self, layer: str) -> bool:
        return any(self.ops_before[layer][op] for op in IMAGE_DEPENDENT_OPS)


def forward_capture(model: nn.Module, x: torch.Tensor, layers: Sequence[str], *, stop: bool = True,
                    channels_last: bool = False, switches: bool = False) -> Capture:
    """Run ``model`` once on ``x`` (1, C, H, W) with deconvnet rules, recording ``layers``.

    ``stop=True`` ends the forward at the last requested layer (no logits). The model's flags are restored on
    return, also when the forward raises; the autograd graph stays alive in the returned Capture. The forward
    values are bit-identical to the model's own forward.

    ``channels_last=True`` feeds the image in channels-last layout: oneDNN's convolutions, forward and backward,
    run about 25 % faster that way on a CPU; activations then differ from the ordinary layout by float rounding
    (~1e-6 relative), which can flip max-pool switches at near-ties. A model whose code cannot take that layout
    (``x.view(n, -1)`` on a channels-last tensor raises) is run again in the ordinary layout.
    ``switches=True`` also records the max-pool switches that ran (``Capture.switches``).
    """
    if channels_last and x.dim() == 4:
        try:
            return _forward_capture(model, x.contiguous(memory_format=torch.channels_last), layers, stop, switches)
        except RuntimeError:
            pass
    return _forward_capture(model, x.contiguous(), layers, stop, switches)


def _forward_capture(model: nn.Module, x: torch.Tensor, layers: Sequence[str], stop: bool, switches: bool
                     ) -> Capture:
    check_interceptable(model, "deconvnet")
    leaf = x.detach().clone(memory_format=torch.preserve_format).requires_grad_(True)
    rules = DeconvRules()
    with preserve_model_state(model), torch.enable_grad(), rules, Recorder(model, layers, stop=stop,
                                                                           switches=switches) as rec:
        rec.on_record.append(lambda name: ops_before.__setitem__(name, Counter(rules.counts)))
        ops_before: dict[str, Counter[str]] = {}
        logits = rec.run(leaf)
    return Capture(leaf, dict(rec.outputs), logits, rules, ops_before, dict(rec.switches))


def _as_grid(t: torch.Tensor) -> torch.Tensor:
    """View a layer output as (N, C, h, w): linear layers' (N, C) become (N, C, 1, 1)."""
    if t.dim() == 2:
        return t[:, :, None, None]
    if t.dim() != 4:
        raise UserInputError(f"cannot project a layer output of shape {tuple(t.shape)}; pick a conv-like layer")
    return t


def top_units(activation: torch.Tensor, k: int, mode: str = "max") -> list[tuple[Unit, float]]:
    """The k channels with the strongest activation, each with the (y, x) of that maximum and its value."""
    grid = _as_grid(activation.detach())[0]
    c, _, w = grid.shape
    peak, flat = grid.reshape(c, -1).max(dim=1)
    order = torch.argsort(peak, descending=True, stable=True)[: min(k, c)]
    return [(Unit(int(ch), (int(flat[ch]) // w, int(flat[ch]) % w)), float(peak[ch])) for ch in order]


def _seed(anchor: torch.Tensor, units: Sequence[Unit], mode: str) -> torch.Tensor:
    """(K, *anchor.shape[1:]) seeds: the unit's activation (max) or the channel's whole map (map), zero elsewhere."""
    grid = _as_grid(anchor.detach())
    seeds = torch.zeros((len(units), *grid.shape[1:]), dtype=grid.dtype, device=grid.device)
    for i, unit in enumerate(units):
        if mode == "map":
            seeds[i, unit.channel] = grid[0, unit.channel]
        else:
            y, x = unit.position or (0, 0)
            seeds[i, unit.channel, y, x] = grid[0, unit.channel, y, x]
    return seeds.view(len(units), *anchor.shape[1:])


def project_full(cap: Capture, layer: str, units: Sequence[Unit], mode: str = "max") -> torch.Tensor:
    """(K, C, H, W) projections by one backward pass per unit over the whole image."""
    anchor = cap.outputs[layer]
    seeds = _seed(anchor, units, mode)
    out = torch.empty((len(units), *cap.x.shape[1:]), dtype=cap.x.dtype, device=cap.x.device)
    for i in range(len(units)):
        (grad,) = torch.autograd.grad(anchor, cap.x, seeds[i : i + 1], retain_graph=True)
        out[i] = grad[0]
    return out


def _crop_box(rf: ReceptiveField, unit: Unit, height: int, width: int) -> tuple[int, int, int, int]:
    """The input crop on which the unit keeps its value (``ReceptiveField.crop_box``)."""
    y, x = unit.position or (0, 0)
    return rf.crop_box(y, x, height, width)


def project_cropped(model: nn.Module, x: torch.Tensor, layer: str, units: Sequence[Unit], rf: ReceptiveField,
                    values: Sequence[float], *, channels_last: bool = False) -> torch.Tensor:
    """(K, C, H, W) projections of single units, each computed on its receptive-field crop.

    Crops of the same size are stacked into one batch: one forward and one backward for the whole group (images in
    a batch are independent in eval mode, so this is exact). ``values`` are the units' activations from the full
    forward, used as seeds so the result matches ``project_full``.
    """
    _, _, height, width = x.shape
    out = torch.zeros((len(units), *x.shape[1:]), dtype=x.dtype, device=x.device)
    boxes = [_crop_box(rf, u, height, width) for u in units]
    groups: dict[tuple[int, int], list[int]] = {}
    for i, (y0, y1, x0, x1) in enumerate(boxes):
        groups.setdefault((y1 - y0, x1 - x0), []).append(i)
    sy, sx = rf.stride
    for members in groups.values():
        crops = torch.cat([x[:, :, boxes[i][0] : boxes[i][1], boxes[i][2] : boxes[i][3]] for i in members])
        cap = forward_capture(model, crops, [layer], stop=True, channels_last=channels_last)
        anchor = cap.outputs[layer]
        seeds = torch.zeros_like(anchor)
        for row, i in enumerate(members):
            y, xx = units[i].position or (0, 0)
            seeds[row, units[i].channel, y - boxes[i][0] // sy, xx - boxes[i][2] // sx] = values[i]
        (grad,) = torch.autograd.grad(anchor, cap.x, seeds)
        for row, i in enumerate(members):
            y0, y1, x0, x1 = boxes[i]
            out[i, :, y0:y1, x0:x1] = grad[row]
    return out


def _cropped_units(rf: ReceptiveField | None, mode: str, units: Sequence[Unit], height: int, width: int) -> list[bool]:
    """Which units to compute on their receptive-field crop: a local model, mode max, and a crop (clipped to the
    image, so border units of deep layers qualify too) covering at most CROP_MAX_AREA of the image."""
    if rf is None or mode != "max" or not getattr(rf, "local", False):
        return [False] * len(units)
    areas = [(y1 - y0) * (x1 - x0) for y0, y1, x0, x1 in (_crop_box(rf, u, height, width) for u in units)]
    return [area <= CROP_MAX_AREA * height * width for area in areas]


def _project_autograd(model: nn.Module, x: torch.Tensor, cap: Capture, layer: str,
                      picked: Sequence[tuple[Unit, float]], mode: str, rf: ReceptiveField | None, channels_last: bool
                      ) -> torch.Tensor:
    """(K, C, H, W): single units on their receptive-field crop where that is exact and cheaper, the rest by a
    backward pass over the whole image."""
    units, values = [u for u, _ in picked], [v for _, v in picked]
    _, _, height, width = x.shape
    on_crop = _cropped_units(rf, mode, units, height, width)
    proj = torch.empty((len(units), *x.shape[1:]), dtype=x.dtype, device=x.device)
    crop_idx = [i for i, c in enumerate(on_crop) if c]
    full_idx = [i for i, c in enumerate(on_crop) if not c]
    if crop_idx:
        assert rf is not None  # _cropped_units crops only with a receptive field
        proj[crop_idx] = project_cropped(model, x, layer, [units[i] for i in crop_idx], rf,
                                         [values[i] for i in crop_idx], channels_last=channels_last)
    if full_idx:
        proj[full_idx] = project_full(cap, layer, [units[i] for i in full_idx], mode)
    return proj


@dataclass
class DeconvOutput:
    """layers: the projections; audit: intercepted ops; logits: (1, classes) when run to the end; outputs: the
    recorded layer outputs (detached: feature maps without a second forward); switches: name -> indices of every
    max-pool that ran, when asked for."""

    layers: list[LayerProjections]
    audit: list[AuditEntry]
    logits: torch.Tensor | None
    outputs: dict[str, torch.Tensor] = field(default_factory=dict)
    switches: dict[str, torch.Tensor] = field(default_factory=dict)


def deconv(model: nn.Module, x: torch.Tensor, layers: Sequence[str], *, top_k: int = 9, mode: str = "max",
           channels: dict[str, Sequence[int]] | None = None, crop: bool = True, logits: bool = False,
           receptive_fields: Mapping[str, ReceptiveField | None] | None = None, channels_last: bool = False,
           engine: str = "autograd", switches: bool = False) -> DeconvOutput:
    """Project the top-``top_k`` feature maps of each layer of ``model`` for one image ``x`` (1, C, H, W).

    mode ``max``: only the strongest activation of each map is kept (the paper's figures); ``map``: the whole map.
    ``channels`` picks feature maps per layer instead of ranking. ``logits=True`` runs the whole network (for
    predictions) instead of stopping at the deepest layer. ``crop=False`` forces full-image backward passes.
    ``channels_last=True`` runs the convolutions in the faster layout (see ``forward_capture``); off by default
    because its different rounding can flip a max-pool switch at a near-tie and route a unit's signal elsewhere
    (3e-2 relative difference from Captum on random VGG16 conv5_3).
    ``engine="explicit"`` projects layer by layer with explicit operators and the recorded switches
    (``vizkit.project.explicit``; chain models only, full image, equal to the default engine).
    ``switches=True`` returns the max-pool switches of the forward pass in ``DeconvOutput.switches``.
    Projections are raw (unnormalised) float32 arrays of the input's shape.
    """
    if mode not in MODES:
        raise UserInputError(f"unknown mode '{mode}'; use one of {', '.join(MODES)}")
    if engine not in ENGINES:
        raise UserInputError(f"unknown engine '{engine}'; use one of {', '.join(ENGINES)}")
    if x.dim() != 4 or x.shape[0] != 1:
        raise UserInputError(f"deconv takes one image of shape (1, C, H, W), got {tuple(x.shape)}")
    cap = forward_capture(model, x, layers, stop=not logits, channels_last=channels_last, switches=switches)
    if receptive_fields is None and crop:
        receptive_fields = analyse_receptive_fields(model, tuple(x.shape))
    receptive_fields = receptive_fields or {}
    _, _, height, width = x.shape
    results = []
    for layer in layers:
        anchor = cap.outputs[layer]
        if channels and layer in channels:
            grid = _as_grid(anchor.detach())[0]
            picked = []
            for ch in channels[layer]:
                if not 0 <= ch < grid.shape[0]:
                    raise UserInputError(f"layer '{layer}' has {grid.shape[0]} channels; channel {ch} does not exist")
                flat = int(grid[ch].flatten().argmax())
                picked.append((Unit(ch, (flat // grid.shape[2], flat % grid.shape[2])), float(grid[ch].max())))
        else:
            picked = top_units(anchor, top_k, mode)
        units = [u for u, _ in picked]
        rf = receptive_fields.get(layer)
        if engine == "explicit":
            from vizkit.project.explicit import explicit_deconv

            proj = explicit_deconv(model, x, layer, _seed(anchor, units, mode))
        else:
            proj = _project_autograd(model, x, cap, layer, picked, mode, rf if crop else None, channels_last)
        grid = _as_grid(anchor.detach())[0]
        results.append(LayerProjections(
            layer=layer, mode=mode,
            units=[UnitProjection(u.channel, u.position or (0, 0), v, proj[i].float().cpu().numpy(),
                                  _box(rf, u, height, width))
                   for i, (u, v) in enumerate(picked)],
            activation_maps=grid[[u.channel for u in units]].float().cpu().numpy(),
            image_dependent=cap.image_dependent(layer),
        ))
    return DeconvOutput(results, cap.rules.audit(), cap.logits.detach() if cap.logits is not None else None,
                        {name: t.detach() for name, t in cap.outputs.items()}, cap.switches)


def _box(rf: ReceptiveField | None, unit: Unit, height: int, width: int) -> tuple[int, int, int, int] | None:
    if rf is None or unit.position is None:
        return None
    y0, y1, x0, x1 = rf.box(*unit.position, height, width)
    return int(y0), int(y1), int(x0), int(x1)


def analyse_receptive_fields(model: nn.Module, input_shape: tuple[int, ...]) -> dict[str, ReceptiveField | None]:
    """Receptive fields of every layer, or {} when the graph cannot be analysed (then no crops, no boxes)."""
    try:
        from vizkit.capture.receptive_field import receptive_fields
    except ImportError:
        return {}
    try:
        return dict(receptive_fields(model, input_shape))
    except Exception:  # noqa: BLE001 - analysis is an optimisation; the full backward is always correct
        return {}
