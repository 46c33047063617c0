"""The evidence that a cluster's region is an artifact the model relies on, not the class's object.

For a cluster of class ``c`` with members' pooled maps ``P_i`` (s x s, each summing to 1; ``spray.pool_maps``):

- **region** ``R``: the fewest grid cells of the mean map ``M = mean_i P_i`` that hold ``REGION_MASS`` of its
  evidence, grown by one cell (a mark the grid cut in two is covered whole). Any shape and any size: a corner
  tag, a frame along two edges, a word across the middle. In pixels: every pixel of a cell of ``R``.
- **transplant** (reliance on *other* classes' images, where the class's object cannot help): each recipient
  (an image of another class) gets the region's pixels of one member (``own``, recipient r from member r mod n)
  or of the members' pixel mean (``mean``). ``gain`` is the mean rise of p(c) and ``flip`` the rise of the share
  predicted c, both against the **baseline**: the same region pasted from another recipient (so a region that
  only erases the recipient's object, or any large pasted area, does not count).
- **pattern transplant** (reported, not in the score): only the members' **pattern** is pasted, their per-pixel
  median on the region's pixels and channels where they vary less than half as much as anyone
  (``pattern_entries``), against the same entries from another recipient. A mark is one fixed pattern, so its
  pattern alone pulls as the whole patch does; an object varies in place, colour and shape, so an object-sized
  region has few fixed pixels and they pull little. Fitted into the score on the lab family it lost more than it
  gained (benchmarks/README.md), so it stays a figure for the reader.
- **deletion** (the second figure): the median drop of p(c) on the members when ``R`` is set to 0 (the mean colour
  of the normalisation). Low for a redundant shortcut: the class's own images still show the object.
- **consistency**: ``1 - within / between``, with ``within`` the members' mean squared distance to their mean
  content in ``R`` and ``between`` the same for non-members (the class's other images and the recipients):
  1 for one identical pattern, about 0 for content that varies as much as anyone's, as object parts do.
- **carriers**: the members that show the region's fixed pattern (``carriers``: over the region's pixels that
  vary far less among the members than among anyone, closer to the members' median than all but 5 % of
  non-members); a cluster mixing carriers and others is split in two before it is judged.
- **concentration**: the members' median share of evidence in ``R`` minus ``R``'s area (what a uniform map
  would put there).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
from scipy.ndimage import binary_dilation
from torch import nn

from vizkit.capture.probe import model_device
from vizkit.capture.state import preserve_model_state

REGION_MASS = 0.5
CARRIER_LEVEL = 0.05
MAX_RECIPIENTS = 64


@dataclass
class Evidence:
    """The figures of one cluster (module docstring); ``area`` is the region's share of the image."""

    area: float
    concentration: float
    consistency: float
    deletion: float
    gain_own: float
    flip_own: float
    gain_mean: float
    flip_mean: float
    gain_pattern: float = 0.0
    flip_pattern: float = 0.0

    def to_dict(self) -> dict[str, float]:
        return {k: float(v) for k, v in asdict(self).items()}


def relevance_region(pooled: np.ndarray, mass: float = REGION_MASS, grow: int = 1) -> np.ndarray:
    """(s, s) bool: the fewest cells of the members' mean map (``pooled`` (n, s, s)) holding ``mass`` of it,
    dilated by ``grow`` cells; empty for maps without evidence."""
    mean = pooled.mean(axis=0)
    total = float(mean.sum())
    region = np.zeros(mean.shape, bool)
    if total <= 0:
        return region
    order = np.argsort(-mean, axis=None, kind="stable")
    cum = np.cumsum(mean.reshape(-1)[order]) / total
    keep = order[: int(np.searchsorted(cum, mass)) + 1]
    region.reshape(-1)[keep] = True
    return binary_dilation(region, structure=np.ones((3, 3), bool), iterations=grow) if grow else region


def pixel_mask(region: np.ndarray, hw: tuple[int, int]) -> torch.Tensor:
    """(H, W) bool: the pixels of the region's cells (cell of pixel y is ``y * s // H``, as adaptive pooling
    covers it when H is a multiple of s)."""
    h, w = hw
    rows = (np.arange(h) * region.shape[0]) // h
    cols = (np.arange(w) * region.shape[1]) // w
    return torch.from_numpy(region[rows][:, cols].copy())


def _probabilities(model: nn.Module, x: torch.Tensor, cls: int, batch: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """(p(cls), predicted == cls) per image."""
    device = model_device(model)
    with preserve_model_state(model), torch.no_grad():
        p = torch.cat([torch.softmax(model(x[i:i + batch].to(device)).float(), dim=1)
                       for i in range(0, len(x), batch)])
    return p[:, cls].cpu().numpy(), (p.argmax(dim=1) == cls).cpu().numpy()


def paste(recipients: torch.Tensor, donors: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Recipients with the masked pixels of ``donors`` (one per recipient, or one for all)."""
    m = mask.to(recipients.device)[None, None]
    return torch.where(m, donors.expand_as(recipients), recipients)


def pattern_entries(members: torch.Tensor, others: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(C, H, W) bool: the region's pixels and channels where the members' median absolute deviation from their
    median is under half the non-members' (``others``): a fixed pattern most members share. Empty below two of
    either."""
    out = torch.zeros(members.shape[1:], dtype=torch.bool)
    if len(members) < 2 or len(others) < 2 or not bool(mask.any()):
        return out
    m = mask.cpu()
    v, u = members.cpu()[:, :, m].double(), others.cpu()[:, :, m].double()
    spread_in = (v - v.median(dim=0).values).abs().median(dim=0).values
    spread_out = (u - u.median(dim=0).values).abs().median(dim=0).values
    out[:, m] = spread_in < 0.5 * spread_out
    return out


def transplant(model: nn.Module, members: torch.Tensor, recipients: torch.Tensor, mask: torch.Tensor, cls: int
               ) -> tuple[float, float, float, float]:
    """(gain_own, flip_own, gain_mean, flip_mean) against the baseline paste (module docstring)."""
    r = recipients[:MAX_RECIPIENTS]
    if len(r) == 0 or len(members) == 0:
        return 0.0, 0.0, 0.0, 0.0
    own = members[torch.arange(len(r)) % len(members)]
    base = r.roll(1, dims=0)
    batches = [paste(r, own, mask), paste(r, members.mean(dim=0, keepdim=True), mask), paste(r, base, mask)]
    p, hit = _probabilities(model, torch.cat(batches), cls)
    (p_own, p_mean, p_base), (h_own, h_mean, h_base) = (np.split(p, 3), np.split(hit.astype(float), 3))
    return (float(p_own.mean() - p_base.mean()), float(h_own.mean() - h_base.mean()),
            float(p_mean.mean() - p_base.mean()), float(h_mean.mean() - h_base.mean()))


def pattern_transplant(model: nn.Module, members: torch.Tensor, recipients: torch.Tensor, pattern: torch.Tensor,
                       cls: int) -> tuple[float, float]:
    """(gain_pattern, flip_pattern): the members' per-pixel median pasted on the ``pattern`` entries only ((C, H, W)
    bool, ``pattern_entries``), against the same entries from another recipient (module docstring)."""
    r = recipients[:MAX_RECIPIENTS]
    if len(r) == 0 or len(members) == 0 or not bool(pattern.any()):
        return 0.0, 0.0
    fixed = pattern.to(r.device)[None]
    pasted = torch.where(fixed, members.median(dim=0).values[None].expand_as(r), r)
    p, hit = _probabilities(model, torch.cat([pasted, torch.where(fixed, r.roll(1, dims=0), r)]), cls)
    (p_pat, p_base), (h_pat, h_base) = np.split(p, 2), np.split(hit.astype(float), 2)
    return float(p_pat.mean() - p_base.mean()), float(h_pat.mean() - h_base.mean())


def deletion(model: nn.Module, members: torch.Tensor, mask: torch.Tensor, cls: int) -> float:
    """Median drop of p(cls) on the members when the region is set to 0."""
    if len(members) == 0:
        return 0.0
    removed = members.masked_fill(mask.to(members.device)[None, None], 0.0)
    p, _ = _probabilities(model, torch.cat([members, removed]), cls)
    before, after = np.split(p, 2)
    return float(np.median(before - after))


def consistency(members: torch.Tensor, others: torch.Tensor, mask: torch.Tensor) -> float:
    """``1 - within / between`` of the region's content (module docstring), in [-1, 1]."""
    if len(members) < 2 or len(others) < 2 or not bool(mask.any()):
        return 0.0
    m = mask.to(members.device)

    def spread(x: torch.Tensor) -> float:
        v = x[:, :, m].flatten(1).double()
        return float(((v - v.mean(dim=0)) ** 2).sum(dim=1).mean())

    between = spread(others)
    if between <= 0:
        return 0.0
    return float(np.clip(1.0 - spread(members) / between, -1.0, 1.0))


def carriers(members: torch.Tensor, others: torch.Tensor, mask: torch.Tensor, level: float = CARRIER_LEVEL
             ) -> np.ndarray:
    """Which members show the cluster's pattern. The pattern's pixels: those of the region where the members'
    median absolute deviation from their per-pixel median is under half the non-members' (a fixed pattern
    shared by most members; an object part varies as much as anything, and the median ignores a minority
    without the pattern). A member carries it when its distance to that median over those pixels is below all but
    ``level`` of the non-members'. Only when the rest are about as unlike the pattern as an ordinary image (their
    median distance beyond the non-members' lower quartile) are they not carriers; otherwise (no pattern pixels,
    or a faint pattern on varied backgrounds that puts them in between) every member carries it."""
    everyone = np.ones(len(members), bool)
    if len(members) < 2 or len(others) < 2 or not bool(mask.any()):
        return everyone
    pattern = pattern_entries(members, others, mask)[:, mask.cpu()]
    if not bool(pattern.any()):
        return everyone
    m = mask.to(members.device)
    v, u = members[:, :, m].double().cpu(), others[:, :, m].double().cpu()
    centre = v.median(dim=0).values
    d_in = ((v[:, pattern] - centre[pattern]) ** 2).mean(dim=1).numpy()
    d_out = ((u[:, pattern] - centre[pattern]) ** 2).mean(dim=1).numpy()
    has = d_in < np.quantile(d_out, level)
    if has.all() or np.median(d_in[~has]) < np.quantile(d_out, 0.25):
        return everyone
    return has


def concentration(pooled: np.ndarray, region: np.ndarray) -> float:
    """Members' median share of evidence in ``region`` minus its area."""
    if not region.any() or len(pooled) == 0:
        return 0.0
    return float(np.median(pooled[:, region].sum(axis=1)) - region.mean())


def cluster_evidence(model: nn.Module, x: torch.Tensor, pooled: np.ndarray, members: np.ndarray,
                     recipients: torch.Tensor, cls: int, region: np.ndarray | None = None) -> Evidence:
    """Every figure for the cluster ``members`` (indices into the class's images ``x`` and maps ``pooled``)."""
    region = relevance_region(pooled[members]) if region is None else region
    mask = pixel_mask(region, (x.shape[-2], x.shape[-1]))
    inside = x[torch.from_numpy(members)]
    rest = np.setdiff1d(np.arange(len(x)), members)
    others = torch.cat([x[torch.from_numpy(rest)], recipients[:MAX_RECIPIENTS]])
    figures = transplant(model, inside, recipients, mask, cls)
    pattern = pattern_transplant(model, inside, recipients, pattern_entries(inside, others, mask), cls)
    return Evidence(float(mask.float().mean()), concentration(pooled[members], region),
                    consistency(inside, others, mask), deletion(model, inside, mask, cls), *figures, *pattern)


__all__ = ["CARRIER_LEVEL", "MAX_RECIPIENTS", "REGION_MASS", "Evidence", "carriers", "cluster_evidence",
           "concentration", "consistency", "deletion", "paste", "pattern_entries", "pattern_transplant", "pixel_mask",
           "relevance_region", "transplant"]
