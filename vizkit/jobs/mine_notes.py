"""What ``vizkit mine``'s pages must say about a scan, besides the provenance: which layers were ranked before
their cap, how ties among a unit's top K were broken, when K or the default layers were changed, when the
projections cannot depend on the image, and when the activations are too small for trained weights."""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torch import nn

from vizkit.jobs.context import tiny_activation_notes
from vizkit.scan.topk import MineResult

__all__ = ["NO_PROJECT_NOTE", "image_independent_layers", "independence_note", "mine_notes", "plan_notes",
           "ranking_note", "tie_note", "top_k_note"]

NO_PROJECT_NOTE = "--no-project: the scan only; no unit was projected or rendered"
TIE_RULE = "smaller image index first (file order)"


def ranking_note(result: MineResult) -> list[str]:
    """Name the layers ranked by the value before their cap (``LayerTopK.ranked``)."""
    before = [f"{name} ({layer.ranked})" for name, layer in result.layers.items() if layer.ranked != "activation"]
    if not before:
        return []
    return [f"ranked by the value before the cap, where the output saturates (ReLU6, clamp ...) and the strongest "
            f"images would tie at it: {', '.join(before)}; their values, means and rates are the pre-activation's"]


def tie_note(result: MineResult) -> list[str]:
    """Per layer: units whose top K hold exactly tied values, and those whose every entry ties; the rule used."""
    parts = []
    for name, layer in result.layers.items():
        ties, filled = layer.ties, layer.filled
        some = int(np.count_nonzero(ties))
        if some:
            every = (ties == filled) & (filled > 1)
            dead = int(np.count_nonzero(every & layer.dead))
            parts.append(f"{name} {some} of {layer.channels} units ({int(np.count_nonzero(every))} with all "
                         f"{result.k} entries tied{f', {dead} of them dead' if dead else ''})")
    if not parts:
        return []
    return [f"exact ties in the top {result.k}, broken by {TIE_RULE}: {'; '.join(parts)} (mine.npz: <layer>/ties)"]


def top_k_note(asked: int, used: int, images: int) -> list[str]:
    return [] if asked == used else [f"--top-k {asked} asks for more than the {images} images listed: K = {used}"]


def plan_notes(duplicates: Mapping[str, str]) -> list[str]:
    """The default layers left out because a kept layer has the same spatial maxima (the same top-K images)."""
    if not duplicates:
        return []
    pairs = ", ".join(f"{dropped} (= {kept})" for dropped, kept in duplicates.items())
    return [f"default layers left out because they give the same top-K images as a kept layer: {pairs}; name them "
            "with --layer to scan them anyway"]


def image_independent_layers(model: nn.Module, layers: Sequence[str], x: torch.Tensor) -> list[str]:
    """The layers with no max-pool, gate or normalisation statistic before them (one deconvnet forward of ``x``):
    their deconvnet projections do not depend on the image beyond which units fire."""
    from vizkit.project.deconv import forward_capture

    cap = forward_capture(model, x, layers)
    return [name for name in layers if not cap.image_dependent(name)]


def independence_note(layers: Sequence[str]) -> list[str]:
    from vizkit.jobs.deconv import NO_SWITCH_NOTE

    if not layers:
        return []
    because = NO_SWITCH_NOTE.split(": ", 1)[1].replace("its projections", "their projections")
    return [f"no max-pool, gate or normalisation statistic before {', '.join(layers)}: {because}"]


def mine_notes(result: MineResult, projected: bool, extra: Sequence[str] = ()) -> list[str]:
    """Page 1's notes for a scan: the ranking, the ties, ``extra`` (the run's K, layers and image independence),
    activations too small for trained weights, a scan-only run."""
    top = [layer.values[np.isfinite(layer.values)] for layer in result.layers.values()]
    return (ranking_note(result) + tie_note(result) + list(extra) + tiny_activation_notes(top)
            + ([] if projected else [NO_PROJECT_NOTE]))
