"""Invariance sweeps (Zeiler & Fergus 2014, Fig. 5): transform an image step by step and watch the network.

For each amount of a transform (vertical translation, scale, rotation, or any function the caller supplies) the
transformed copies go through the model in one batched forward, together with the original image, and give:

- per requested layer, the Euclidean distance between the layer's output for the original and for the transformed
  image, each flattened to one feature vector. The paper plots it as "canonical distance" without saying how it
  is normalised; here it is the **relative distance** ``||f(T x) - f(x)|| / ||f(x)||``, computed in float64. Dividing
  by the original vector's own length puts layers of very different size and magnitude on one axis: 0 is the same
  vector, 1 is as far away as the vector is long (e.g. all activations switched off), about 1.41 an orthogonal
  vector of the same length. The raw distance and the norm are kept too (a layer whose original output is all
  zeros has no relative distance: NaN);
- the softmax probability of the target class (default: the top class of the original image) and the top-5
  classes.

Transforms act on the normalised input tensor (after preprocessing), so the image keeps the model's input size.
Uncovered pixels are filled with ``fill`` in normalised input space; the default 0 is the model's mean pixel in
image space (``Preprocessing.mean``, e.g. grey 0.5 for mean = std = 0.5), as the paper pads with the mean.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from vizkit.capture.recorder import Recorder
from vizkit.capture.state import preserve_model_state
from vizkit.errors import ModelError, UserInputError

TRANSFORMS = ("translate", "scale", "rotate")
PADDINGS = ("mean", "circular")
TOP = 5
PAPER_SIZE = 224  # the paper's input side; the default translation range scales with the model's input
DEFAULT_RANGES: dict[str, tuple[float, float]] = {"translate": (-60.0, 60.0), "scale": (1.0, 1.8),
                                                  "rotate": (0.0, 360.0)}
UNITS = {"translate": "px", "scale": "x", "rotate": "deg"}


# ---------------------------------------------------------------------------------------------------- transforms

def translate(x: torch.Tensor, shifts: int | Sequence[int], *, fill: float = 0.0,
              circular: bool = False) -> torch.Tensor:
    """Shift the (1, C, H, W) x down by each whole number of pixels (up when negative): (S, C, H, W), pixels moved
    exactly (an index gather, no interpolation). ``circular``: rows leaving one edge come back at the other (as
    ``torch.roll``); otherwise uncovered rows are filled with ``fill``."""
    dy = torch.tensor([shifts] if isinstance(shifts, int) else [int(v) for v in shifts], device=x.device)
    height = x.shape[-2]
    rows = torch.arange(height, device=x.device)[None, :] - dy[:, None]  # (S, H): source row of each output row
    inside = (rows >= 0) & (rows < height)
    rows = rows % height if circular else rows.clamp(0, height - 1)
    out = x[0][:, rows, :].transpose(0, 1)  # (C, S, H, W) -> (S, C, H, W)
    if circular:
        return out.contiguous()
    return torch.where(inside[:, None, :, None], out, torch.full_like(out, fill)).contiguous()


def _resample(x: torch.Tensor, theta: torch.Tensor, fill: float) -> torch.Tensor:
    """Bilinear resampling of the (1, C, H, W) x at S affine grids ``theta`` (S, 2, 3) in normalised coordinates,
    ``fill`` outside: (S, C, H, W), one ``grid_sample`` call."""
    theta = theta.to(device=x.device, dtype=x.dtype)
    grid = F.affine_grid(theta, [theta.shape[0], *x.shape[1:]], align_corners=False)
    shifted = (x - fill).expand(theta.shape[0], *x.shape[1:])
    return F.grid_sample(shifted, grid, mode="bilinear", padding_mode="zeros", align_corners=False) + fill


def _affine(x: torch.Tensor, thetas: list[torch.Tensor | None], fill: float) -> torch.Tensor:
    """Apply one affine map per entry (None: the identity, returned exactly) to the (1, C, H, W) x."""
    out = x.expand(len(thetas), *x.shape[1:]).clone()
    moved = [i for i, t in enumerate(thetas) if t is not None]
    if moved:
        out[moved] = _resample(x, torch.stack([thetas[i] for i in moved]), fill)  # type: ignore[misc]
    return out


def _scale_theta(factor: float) -> torch.Tensor | None:
    if factor <= 0:
        raise UserInputError(f"scale factor must be positive, got {factor}")
    if factor == 1:
        return None
    return torch.tensor([[1 / factor, 0.0, 0.0], [0.0, 1 / factor, 0.0]], dtype=torch.float64)


def _rotate_theta(degrees: float, height: int, width: int) -> torch.Tensor | None:
    if float(degrees) % 360 == 0:
        return None
    c, s = math.cos(math.radians(degrees)), math.sin(math.radians(degrees))
    # Output pixel p (centred, in pixels) samples the input at R(-angle) p; normalised coordinates scale x by
    # W/2 and y by H/2, hence the aspect factors off the diagonal.
    return torch.tensor([[c, -s * height / width, 0.0], [s * width / height, c, 0.0]], dtype=torch.float64)


def scale(x: torch.Tensor, factors: float | Sequence[float], *, fill: float = 0.0) -> torch.Tensor:
    """Zoom the (1, C, H, W) x about its centre by each factor (> 1 enlarges and the borders leave the frame; < 1
    shrinks and pads with ``fill``); bilinear; one output per factor (S, C, H, W). Factor 1 returns x exactly."""
    factors = [factors] if isinstance(factors, (int, float)) else list(factors)
    return _affine(x, [_scale_theta(float(f)) for f in factors], fill)


def rotate(x: torch.Tensor, degrees: float | Sequence[float], *, fill: float = 0.0) -> torch.Tensor:
    """Rotate the (1, C, H, W) x counter-clockwise as displayed (row 0 at the top) about its centre by each angle
    in degrees; bilinear, corners filled with ``fill``; (S, C, H, W). 90 degrees on a square image equals
    ``torch.rot90(x, 1, (2, 3))``; multiples of 360 return x exactly."""
    angles = [degrees] if isinstance(degrees, (int, float)) else list(degrees)
    height, width = x.shape[-2:]
    return _affine(x, [_rotate_theta(float(a), height, width) for a in angles], fill)


@dataclass(frozen=True)
class Sweep:
    """One transform and the amounts to sweep: ``apply(x, amounts)`` maps the (1, C, H, W) normalised input to its
    S transformed copies (S, C, H, W), one per amount. Any function works: custom transforms go through the same
    sweep (``Sweep.per_amount`` wraps a one-amount function)."""

    name: str
    unit: str
    amounts: tuple[float, ...]
    apply: Callable[[torch.Tensor, Sequence[float]], torch.Tensor]

    @classmethod
    def per_amount(cls, name: str, unit: str, amounts: Sequence[float],
                   fn: Callable[[torch.Tensor, float], torch.Tensor]) -> Sweep:
        """A sweep from ``fn(x, amount) -> (1, C, H, W)``."""
        return cls(name, unit, tuple(float(a) for a in amounts), lambda x, a: torch.cat([fn(x, v) for v in a]))


def default_range(name: str, size: int) -> tuple[float, float]:
    """The paper's range; translation in pixels of an input ``size`` pixels high (±60 at 224)."""
    lo, hi = DEFAULT_RANGES[name]
    return (lo * size / PAPER_SIZE, hi * size / PAPER_SIZE) if name == "translate" else (lo, hi)


def make_sweep(name: str, size: int, steps: int = 25, value_range: tuple[float, float] | None = None, *,
               padding: str = "mean", fill: float = 0.0) -> Sweep:
    """A built-in transform (``translate``, ``scale``, ``rotate``) over ``steps`` evenly spaced amounts.

    ``value_range`` (lo, hi) in the transform's unit (translation: pixels of the model's input; default ±60 px at
    224, scaled to ``size``); translations are rounded to whole pixels so that no interpolation blurs the image
    (blur alone moves the first layer's features). ``padding`` ``circular`` rolls a translation around instead of
    filling with the mean pixel (scale and rotation always fill)."""
    if name not in TRANSFORMS:
        raise UserInputError(f"unknown transform {name!r}: use one of {', '.join(TRANSFORMS)}")
    if padding not in PADDINGS:
        raise UserInputError(f"unknown padding {padding!r}: use one of {', '.join(PADDINGS)}")
    if steps < 2:
        raise UserInputError(f"--steps must be at least 2, got {steps}")
    lo, hi = value_range if value_range is not None else default_range(name, size)
    if not (math.isfinite(lo) and math.isfinite(hi)) or lo >= hi:
        raise UserInputError(f"--range for {name} must be two finite numbers LO < HI, got {lo}:{hi}")
    if name == "scale" and lo <= 0:
        raise UserInputError(f"--range for scale must be positive factors, got {lo}:{hi}")
    if name == "scale" and lo * size < 1:
        raise UserInputError(f"--range scale={lo:g}:{hi:g} shrinks the {size}-pixel input below one pixel; start "
                             f"at {1 / size:.3g} or more")
    if name == "translate" and max(abs(lo), abs(hi)) >= size:
        raise UserInputError(f"--range translate={lo:g}:{hi:g} moves the image out of the frame (the input is "
                             f"{size} pixels high); keep shifts between -{size - 1} and {size - 1}")
    amounts = np.linspace(lo, hi, steps)
    if name == "translate":
        amounts = np.round(amounts)
        circular = padding == "circular"
        return Sweep(name, UNITS[name], tuple(float(a) for a in amounts),
                     lambda x, a: translate(x, [int(v) for v in a], fill=fill, circular=circular))
    fn = scale if name == "scale" else rotate
    return Sweep(name, UNITS[name], tuple(float(a) for a in amounts), lambda x, a: fn(x, a, fill=fill))


# ---------------------------------------------------------------------------------------------------------- sweep

@dataclass
class Curves:
    """One transform's sweep; plain numpy. amounts (S,); probability (S,) of the target class; softmax (S, classes)
    every class's probability; top_classes, top_probability (S, 5) the five most probable classes per amount;
    distance / raw_distance: layer -> (S,) relative and absolute Euclidean distance to the original's feature
    vector."""

    name: str
    unit: str
    amounts: np.ndarray
    probability: np.ndarray
    softmax: np.ndarray
    top_classes: np.ndarray
    top_probability: np.ndarray
    distance: dict[str, np.ndarray]
    raw_distance: dict[str, np.ndarray]


@dataclass
class InvarianceSweep:
    """Fig. 5 for one image. input (1, C, H, W) float32 as fed to the model; target the watched class; logits
    (1, classes) of the original; norm: layer -> ||f(x)|| of the original's feature vector; curves per transform."""

    input: np.ndarray
    layers: list[str]
    target: int
    logits: np.ndarray
    norm: dict[str, float]
    curves: list[Curves] = field(default_factory=list)

    @property
    def base_probability(self) -> float:
        return float(torch.softmax(torch.from_numpy(self.logits).double(), dim=1)[0, self.target])

    def arrays(self) -> dict[str, np.ndarray]:
        """invariance.npz: input, target, logits, layers, transforms, L/norm; per transform T: T/amounts,
        T/probability, T/softmax, T/top_classes, T/top_probability, T/distance/L, T/raw_distance/L."""
        out: dict[str, np.ndarray] = {
            "input": self.input.astype(np.float32, copy=False), "target": np.asarray(self.target, np.int64),
            "logits": self.logits.astype(np.float32, copy=False), "layers": np.asarray(self.layers, dtype=str),
            "transforms": np.asarray([c.name for c in self.curves], dtype=str)}
        for layer in self.layers:
            out[f"{layer}/norm"] = np.asarray(self.norm[layer], np.float64)
        for c in self.curves:
            out[f"{c.name}/amounts"] = c.amounts.astype(np.float64)
            out[f"{c.name}/probability"] = c.probability.astype(np.float64)
            out[f"{c.name}/softmax"] = c.softmax.astype(np.float32)
            out[f"{c.name}/top_classes"] = c.top_classes.astype(np.int64)
            out[f"{c.name}/top_probability"] = c.top_probability.astype(np.float64)
            for layer in self.layers:
                out[f"{c.name}/distance/{layer}"] = c.distance[layer].astype(np.float64)
                out[f"{c.name}/raw_distance/{layer}"] = c.raw_distance[layer].astype(np.float64)
        return out


def _forward(model: nn.Module, x: torch.Tensor, layers: Sequence[str]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Logits and the layers' outputs flattened to (N, D), channels-last first (faster CPU convs), falling
    back to the ordinary layout for models whose code cannot take it."""
    try:
        with Recorder(model, layers) as rec:
            logits = rec.run(x.contiguous(memory_format=torch.channels_last))
    except RuntimeError:
        with Recorder(model, layers) as rec:
            logits = rec.run(x.contiguous())
    if not isinstance(logits, torch.Tensor) or logits.dim() != 2 or logits.shape[0] != x.shape[0]:
        shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise ModelError(f"the model returns {shape}, not class scores (N, classes); invariance needs a classifier")
    return logits, {n: rec.outputs[n].reshape(x.shape[0], -1) for n in layers}


def sweep(model: nn.Module, x: torch.Tensor, sweeps: Sequence[Sweep], layers: Sequence[str], *,
          target: int | None = None, batch: int = 64) -> InvarianceSweep:
    """Run every sweep on the (1, C, H, W) normalised input ``x``: per sweep, the original and its S transformed
    copies in one forward (``batch`` bounds the images per forward; results do not depend on it). The model is
    left exactly as it was."""
    if x.dim() != 4 or x.shape[0] != 1:
        raise UserInputError(f"invariance takes one image (1, C, H, W), got {tuple(x.shape)}")
    if batch < 2:
        raise UserInputError(f"--batch must be at least 2, got {batch}")
    layers = list(dict.fromkeys(layers))
    result: InvarianceSweep | None = None
    with preserve_model_state(model), torch.no_grad():
        for sw in sweeps:
            stack = torch.cat([x, _checked(sw, x)])
            logits: list[torch.Tensor] = []
            dist: dict[str, list[torch.Tensor]] = {n: [] for n in layers}
            base: dict[str, torch.Tensor] = {}
            for start in range(0, len(stack), batch):
                out, feats = _forward(model, stack[start:start + batch], layers)
                if start == 0:
                    base = {n: f[:1] for n, f in feats.items()}
                logits.append(out.detach().double().cpu())
                for n, f in feats.items():
                    dist[n].append(torch.linalg.vector_norm(f - base[n], dim=1, dtype=torch.float64).cpu())
            all_logits = torch.cat(logits)
            if result is None:
                norm = {n: float(torch.linalg.vector_norm(base[n], dtype=torch.float64)) for n in layers}
                tgt = int(all_logits[0].argmax()) if target is None else int(target)
                if not 0 <= tgt < all_logits.shape[1]:
                    raise UserInputError(f"target class {tgt} is outside the model's {all_logits.shape[1]} classes")
                result = InvarianceSweep(x.detach().float().cpu().numpy(), layers, tgt,
                                          all_logits[:1].float().numpy(), norm)
            result.curves.append(_curves(sw, all_logits[1:], {n: torch.cat(d)[1:] for n, d in dist.items()},
                                         result))
    if result is None:
        raise UserInputError("no transform to sweep")
    return result


def _checked(sw: Sweep, x: torch.Tensor) -> torch.Tensor:
    y = sw.apply(x, sw.amounts)
    want = (len(sw.amounts), *x.shape[1:])
    if not isinstance(y, torch.Tensor) or tuple(y.shape) != want:
        shape = tuple(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__
        raise UserInputError(f"transform {sw.name} returned {shape}; it must return {want} (one image per amount)")
    return y.to(x.dtype)


def _curves(sw: Sweep, logits: torch.Tensor, raw: dict[str, torch.Tensor], result: InvarianceSweep) -> Curves:
    probs = torch.softmax(logits, dim=1)
    top = torch.topk(probs, min(TOP, probs.shape[1]), dim=1)
    rel = {n: (d / result.norm[n]).numpy() if result.norm[n] > 0 else np.full(d.shape, np.nan)
           for n, d in raw.items()}
    return Curves(sw.name, sw.unit, np.asarray(sw.amounts, np.float64), probs[:, result.target].numpy(),
                  probs.float().numpy(), top.indices.numpy(), top.values.numpy(), rel,
                  {n: d.numpy() for n, d in raw.items()})


__all__ = ["DEFAULT_RANGES", "PADDINGS", "TRANSFORMS", "Curves", "InvarianceSweep", "Sweep",
           "default_range", "make_sweep", "rotate", "scale", "sweep", "translate"]
