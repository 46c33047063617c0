"""Seeds for checking a deconvnet against ``vizkit.project.explicit.explicit_deconv`` by hand."""
from __future__ import annotations

from collections.abc import Sequence

import torch


def explicit_seeds(output: torch.Tensor, units: Sequence[tuple[int, int, int]]) -> torch.Tensor:
    """(K, *output.shape[1:]) seeds that keep one activation (c, y, x) of ``output`` (1, C, H, W) each, zero
    everywhere else: the input ``explicit_deconv`` projects."""
    seeds = torch.zeros((len(units), *output.shape[1:]), dtype=output.dtype)
    for i, (c, y, x) in enumerate(units):
        seeds[i, c, y, x] = output[0, c, y, x]
    return seeds


__all__ = ["explicit_seeds"]
