"""What a dream maximises: a function of one image's activations, named for the outputs (``features.29:12``).

An :class:`Objective` reads the layers it names (``OUTPUT`` is the model's output, the pre-softmax logits) for the
``n`` views of one image and returns ``n`` values; the optimiser maximises their mean. ``channel``, ``neuron`` and
``class_logit`` are the standard ones; :func:`objective` wraps any callable, and objectives add and scale
(``channel("l", 3) - 0.5 * channel("l", 7)``) into weighted sums.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch

from vizkit.errors import UserInputError

__all__ = ["OUTPUT", "Objective", "channel", "class_logit", "neuron", "objective", "parse_objective", "weighted"]

#: The key of the model's output among an objective's layers.
OUTPUT = "@output"
Activations = Mapping[str, torch.Tensor]


@dataclass(frozen=True)
class Objective:
    """``fn(acts) -> (n,)`` over ``acts[layer]`` of shape (n, ...) for every name in ``layers``."""

    name: str
    layers: tuple[str, ...]
    fn: Callable[[Activations], torch.Tensor]
    terms: tuple[tuple[float, Objective], ...] = ()  # a weighted sum's parts, so sums of sums stay flat

    def __call__(self, acts: Activations) -> torch.Tensor:
        value = self.fn(acts)
        n = next(iter(acts.values())).shape[0] if acts else 1
        if value.dim() == 0:
            value = value.expand(n)
        if value.shape != (n,):
            raise UserInputError(f"objective {self.name} returned shape {tuple(value.shape)}; it must return one "
                                 f"value per view, shape ({n},)")
        return value

    def __add__(self, other: Objective) -> Objective:
        return weighted([(1.0, self), (1.0, other)])

    def __sub__(self, other: Objective) -> Objective:
        return weighted([(1.0, self), (-1.0, other)])

    def __mul__(self, weight: float) -> Objective:
        return weighted([(float(weight), self)])

    __rmul__ = __mul__


def _spatial_mean(t: torch.Tensor, unit: int, name: str) -> torch.Tensor:
    if t.dim() < 2 or not 0 <= unit < t.shape[1]:
        raise UserInputError(f"unit {unit} of {name} does not exist: it has {t.shape[1] if t.dim() > 1 else 0} "
                             "channels (units count from 0)")
    picked = t[:, unit]
    return picked.flatten(1).mean(1) if picked.dim() > 1 else picked


def channel(layer: str, unit: int) -> Objective:
    """The mean activation of channel ``unit`` at ``layer`` (for a (n, C) layer: the unit itself)."""
    return Objective(f"{layer}:{unit}", (layer,), lambda a: _spatial_mean(a[layer], unit, layer))


def neuron(layer: str, unit: int, y: int | None = None, x: int | None = None) -> Objective:
    """Channel ``unit`` at one position of ``layer``'s map (default: the centre)."""
    def fn(a: Activations) -> torch.Tensor:
        t = a[layer]
        if t.dim() != 4:
            raise UserInputError(f"neuron objectives need a (N, C, H, W) layer; {layer} gives {tuple(t.shape)}: "
                                 "use a channel objective")
        _spatial_mean(t[:, :, :1, :1], unit, layer)  # checks the unit
        return t[:, unit, t.shape[2] // 2 if y is None else y, t.shape[3] // 2 if x is None else x]

    where = "" if y is None and x is None else f"@{y},{x}"
    return Objective(f"{layer}:{unit}{where or '@centre'}", (layer,), fn)


def class_logit(index: int, label: str | None = None) -> Objective:
    """The pre-softmax logit of class ``index``: ``class:INDEX`` (the label is only for people)."""
    def fn(a: Activations) -> torch.Tensor:
        logits = a[OUTPUT]
        if logits.dim() != 2 or not 0 <= index < logits.shape[1]:
            raise UserInputError(f"class {index} does not exist: the model outputs {tuple(logits.shape)[1:]} "
                                 "(classes count from 0)")
        return logits[:, index]

    del label
    return Objective(f"class:{index}", (OUTPUT,), fn)


def objective(fn: Callable[..., torch.Tensor], layers: str | Sequence[str], name: str) -> Objective:
    """Any callable: given one layer name, ``fn(tensor)``; given several, ``fn({layer: tensor})``."""
    if isinstance(layers, str):
        layer = layers
        return Objective(name, (layer,), lambda a: fn(a[layer]))
    return Objective(name, tuple(layers), fn)


def weighted(terms: Sequence[tuple[float, Objective]]) -> Objective:
    """``sum(w * obj)``, named like ``0.5*features.4:1+features.4:2``."""
    if not terms:
        raise UserInputError("a weighted objective needs at least one term")
    terms = [(w * v, inner) for w, o in terms for v, inner in (o.terms or ((1.0, o),))]
    layers = tuple(dict.fromkeys(layer for _, o in terms for layer in o.layers))
    name = "+".join(o.name if w == 1 else f"{w:g}*{o.name}" for w, o in terms).replace("+-", "-")

    def fn(a: Activations) -> torch.Tensor:
        return torch.stack([w * o(a) for w, o in terms]).sum(0)

    return Objective(name, layers, fn, tuple(terms))


def parse_objective(spec: str, kind: str = "channel") -> Objective:
    """``class:N`` or ``LAYER:N`` (``kind`` channel or neuron), the names the outputs use."""
    head, sep, tail = spec.rpartition(":")
    if not sep or not tail.isdigit() or not head:
        raise UserInputError(f"objective {spec!r} is not LAYER:UNIT or class:INDEX (e.g. features.29:12, class:1)")
    if head == "class":
        return class_logit(int(tail))
    if kind not in ("channel", "neuron"):
        raise UserInputError(f"unknown objective kind {kind!r}: use channel or neuron")
    return channel(head, int(tail)) if kind == "channel" else neuron(head, int(tail))
