"""Receptive fields of every module's output, derived from the traced graph.

``receptive_fields(model)`` traces the model with ``torch.fx`` and runs the graph once (on the model's own device:
a model built on the meta device costs nothing) while propagating, per spatial axis, the classic triple

* ``size``  -- extent of one unit's field in input pixels,
* ``jump``  -- cumulative stride: input pixels between neighbouring units,
* ``start`` -- input coordinate of the centre of unit (0, 0)'s field,

through every node: a window op with kernel k, stride s, left padding p and dilation d has k_eff = d*(k-1)+1 and
does ``size += (k_eff-1)*jump; start += ((k_eff-1)/2 - p)*jump; jump *= s``. Elementwise merges (add, mul, cat
along channels) take the union of their operands' fields (the jumps must agree). A ``local`` flag records whether
every op on the way is spatially local with static padding, i.e. whether a unit's value is unchanged when the input
is cropped to the unit's box (DESIGN section 3): global pooling, gates (squeeze-excitation), normalisation over
space, circular padding and padding computed from the input size (timm ``Conv2dSame``) clear it. Such units keep
the geometry of their spatially-local path (the box says where the unit looks), with ``local=False``.

Outputs without a spatial layout (after flatten / linear), or produced by an op this module does not know
(attention, interpolation, ...), get ``None``. Only 2-D layouts (N, C, H, W) are tracked; permutes / reshapes that
keep H and W as separate dimensions (ConvNeXt's channels-last LayerNorm) are followed.

Module names map onto graph nodes at the tracer's module-call boundary: the value a module's first call returns
(a ``call_module`` node for leaves, the returned node of the traced-through forward otherwise), so non-leaf modules
(``layer4``, ``features``) get the field of what they return. Modules whose forward cannot be traced symbolically
become opaque leaves (their children then get ``None``); if the root itself cannot be traced, a forward with hooks
handles pure chains of modules and gives ``None`` past the first op it cannot follow.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from vizkit.capture.receptive_field.geometry import Geo, zeros_input
from vizkit.capture.receptive_field.trace import chain_fallback, traced
from vizkit.capture.state import preserve_model_state
from vizkit.errors import ModelError, close_matches

__all__ = ["ReceptiveField", "forward_failed", "receptive_field", "receptive_fields", "zeros_input"]


@dataclass(frozen=True)
class ReceptiveField:
    """Field of one unit of a layer's output, in input pixels. ``size``/``stride``/``start`` are (h, w) pairs.

    ``local``: the unit's value is unchanged when the input is cropped by ``crop_box``. ``same_padding``: some window
    on the way pads from its input size like TensorFlow's "same" (timm ``Conv2dSame``); that padding depends only
    on the size modulo the stride, so ``crop_box`` makes the crop's size congruent to the image's.
    """

    size: tuple[int, int]
    stride: tuple[int, int]
    start: tuple[float, float]
    local: bool
    same_padding: bool = False

    def box(self, y: int, x: int, height: int, width: int) -> tuple[int, int, int, int]:
        """(y0, y1, x0, x1) half-open pixel box of unit (y, x)'s field clipped to an image of height x width."""
        lo = [round(self.start[a] + u * self.stride[a] - (self.size[a] - 1) / 2) for a, u in ((0, y), (1, x))]
        y0, x0 = max(lo[0], 0), max(lo[1], 0)
        y1, x1 = min(lo[0] + self.size[0], height), min(lo[1] + self.size[1], width)
        return y0, max(y1, y0), x0, max(x1, x0)

    def crop_box(self, y: int, x: int, height: int, width: int) -> tuple[int, int, int, int]:
        """(y0, y1, x0, x1): an input crop on which unit (y, x) of a ``local`` layer has its full-image value, at
        position (y - y0 / stride, x - x0 / stride). The field widened by one stride, the start aligned down to the
        cumulative stride (every grid lines up) and, with ``same_padding``, the end moved so that the crop's size is
        congruent to the image's modulo the stride (every layer then pads the crop as it pads the image)."""
        y0, y1, x0, x1 = self.box(y, x, height, width)
        sy, sx = self.stride
        y0, x0 = max(0, y0 - sy) // sy * sy, max(0, x0 - sx) // sx * sx
        y1, x1 = min(height, y1 + sy), min(width, x1 + sx)
        if self.same_padding:
            y1, x1 = min(height, y1 + (height - y1) % sy), min(width, x1 + (width - x1) % sx)
        return y0, y1, x0, x1


def receptive_fields(model: nn.Module,
                     input_shape: tuple[int, ...] = (1, 3, 224, 224)) -> dict[str, ReceptiveField | None]:
    """Receptive field of the output of every named module (root excluded); ``None`` where not spatial/derivable.

    Runs one forward of the traced graph in eval mode with zeros on the model's device (build the model under
    ``torch.device("meta")`` to make it free); every module's ``training`` flag is restored afterwards. A module
    called several times (ResNet's shared ReLU) is described by its first call.
    """
    names = [name for name, _ in model.named_modules() if name]
    x = zeros_input(model, input_shape)
    with preserve_model_state(model, freeze=False), torch.no_grad():
        try:
            geos = traced(model, x)
        except Exception:  # noqa: BLE001 - untraceable root forward: follow module order where it is a pure chain
            try:
                geos = chain_fallback(model, x)
            except Exception as e:
                raise forward_failed(input_shape, e) from e
    return {name: _public(geos.get(name)) for name in names}


def forward_failed(input_shape: tuple[int, ...], error: Exception) -> ModelError:
    """The one-line error for a model that cannot run on zeros of ``input_shape``."""
    return ModelError(f"The model's forward failed on zeros of shape {tuple(input_shape)}: {error}. "
                      "Pass the input_shape the model expects.")


def receptive_field(model: nn.Module, layer: str,
                    input_shape: tuple[int, ...] = (1, 3, 224, 224)) -> ReceptiveField | None:
    """Receptive field of the output of the module named ``layer`` (a ``named_modules()`` path)."""
    fields = receptive_fields(model, input_shape)
    if layer not in fields:
        hint = close_matches(layer, list(fields))
        raise ModelError(f"Unknown layer {layer!r}; use a name from model.named_modules().{hint}")
    return fields[layer]


def _public(g: Geo | None) -> ReceptiveField | None:
    if g is None:
        return None
    return ReceptiveField(size=g.size, stride=g.jump, start=g.start, local=g.local, same_padding=g.same_pad)
