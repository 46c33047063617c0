"""``vizkit mine --rank relevance --class C``: the parts of the mine job that differ from the activation scan.

The scan itself is the activation scan's (``vizkit.scan.state``) with ``vizkit.scan.relevance``'s scorer, so the
exact top-K, its tie rule, checkpoints and the ``torchrun`` all-gather are shared. Here: checking the options,
resolving the class, what the checkpoint and page 1 say, and pass 2 (conditional heatmaps instead of deconvnet
projections: what the model uses of each reference image for the class).
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
from torch import nn

from vizkit.capture.probe import num_classes
from vizkit.errors import UserInputError
from vizkit.scan.relevance import RANKS, RelevanceScoring, parse_class
from vizkit.scan.state import ScorerFactory
from vizkit.scan.topk import ACTIVATION, RELEVANCE, MineResult, Ranking

if TYPE_CHECKING:
    from vizkit.load.dataset import ImageDataset
    from vizkit.load.preprocessing import Preprocessing
    from vizkit.project.mine_heatmaps import UnitHeatmaps

log = logging.getLogger("vizkit")

__all__ = ["check_rank", "heatmap_units", "ranking_label", "ranking_notes", "resolve_ranking"]


def check_rank(rank: str, target: str | int | None) -> None:
    """Option errors found before the model loads: an unknown ``--rank``, relevance without ``--class``."""
    if rank not in RANKS:
        raise UserInputError(f"--rank {rank!r}: use {' or '.join(RANKS)}")
    if rank == RELEVANCE and (target is None or str(target).strip() == ""):
        raise UserInputError("--rank relevance needs --class C (the class whose relevance ranks the images: an index "
                             "or a class name of the model)")
    if rank == ACTIVATION and target is not None:
        raise UserInputError("--class only applies with --rank relevance (activation ranking has no class)")


def resolve_ranking(rank: str, target: str | int | None, model: nn.Module, class_names: Sequence[str] | None,
                    input_shape: tuple[int, ...], batch_size: int = 0) -> tuple[Ranking, ScorerFactory | None]:
    """(what the scan ranks, the scorer for ``scan_batches``; None: activations). ``batch_size``: the run's, which
    every relevance backward pads to (bit-identical results for any sharding, see ``RelevanceScorer``)."""
    check_rank(rank, target)
    if rank == ACTIVATION:
        return Ranking(), None
    index = parse_class(target, class_names, num_classes(model, input_shape))
    name = class_names[index] if class_names and index < len(class_names) else None
    return Ranking(RELEVANCE, index, name), RelevanceScoring(index, batch_size=batch_size)


def ranking_label(ranking: Ranking) -> str:
    """How the checkpoint records the ranking (a resume with another one is refused)."""
    return ACTIVATION if ranking.mode == ACTIVATION else f"relevance for class {ranking.target}"


def ranking_notes(ranking: Ranking) -> list[str]:
    """What page 1 says about a relevance-ranked scan."""
    if ranking.mode == ACTIVATION:
        return []
    named = f"{ranking.target} ({ranking.name})" if ranking.name else str(ranking.target)
    return [f"--rank relevance --class {named}: each unit's top-K are the images where the unit is most relevant "
            "for this class (zennit-crp's RelMax: the unit's share of the LRP relevance at its layer, EpsilonPlusFlat),"
            " i.e. what the model uses for the class, not what excites the unit most. Values are relevance shares; "
            "'mean' is the mean share, 'firing rate' and 'dead' count images where the share is > 0. The unit pages "
            "show each image's conditional heatmap (red: relevance for the class, blue: against)."]


def heatmap_units(model: nn.Module, result: MineResult, dataset: ImageDataset, layers: Sequence[str],
                  units: str | None, prep: Preprocessing, device: torch.device) -> list[UnitHeatmaps]:
    """Pass 2 of a relevance-ranked run: the selected units' conditional heatmaps, layer by layer."""
    from vizkit.project.mine_heatmaps import unit_heatmaps
    from vizkit.project.mine_projection import select_units

    target = result.ranking.target
    assert target is not None
    out: list[UnitHeatmaps] = []
    for layer in layers:
        channels = select_units(result, layer, units)
        log.info("conditional heatmaps of %d units of %s", len(channels), layer)
        out += unit_heatmaps(model, result, dataset, layer, channels, target, prep=prep, device=device)
    return out
