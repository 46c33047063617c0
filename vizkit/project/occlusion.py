"""Occlusion sensitivity (Zeiler & Fergus 2014, Fig. 7): slide a grey square over the image and watch the network.

For every occluder position one forward pass (many occluded copies per batch) gives, at once,

(a) ``activity``: the total activation (sum over the map) of the layer's strongest feature map,
(c) ``probability``: the softmax probability of the target class (default: the top class on the unoccluded image),
(d) ``label``: the most probable class,

and one deconvnet projection of that feature map on the unoccluded image gives (b) ``projection``.

The occluder is filled with ``fill`` in the *normalised* input space; the default 0 is the model's mean pixel
(grey, as in the paper). Positions follow Captum's ``Occlusion``: top-left corners at 0, s, 2s, ... until the window
reaches the far edge, ``ceil((H - window) / stride) + 1`` per axis; where the stride does not divide ``H - window``
the last window is clipped at the edge. :func:`pixel_attribution` turns the probability map into Captum's per-pixel
attribution exactly.

Why not Captum's ``Occlusion``: it returns one per-pixel map averaged over overlapping windows (the per-position
values are lost), needs one full run per quantity (class probability, layer activity), and cannot give the
most-probable-label map. Here one forward per occluded batch serves all three, and the batch is fed in
channels-last memory order, which CPU convolutions run markedly faster (``benchmarks/bench_occlusion.py``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from vizkit.capture.probe import model_device
from vizkit.capture.recorder import Recorder, resolve_layers
from vizkit.capture.state import preserve_model_state
from vizkit.errors import UserInputError
from vizkit.project.deconv import DeconvOutput, _as_grid, deconv
from vizkit.project.results import AuditEntry

Pair = tuple[int, int]


@dataclass
class OcclusionMaps:
    """Zeiler–Fergus Fig. 7 for one image; plain numpy, no torch objects.

    input: (1, C, H, W) float32 as fed to the model. activity, probability: (h_o, w_o) float32, one value per
    occluder position (row = vertical position); label: (h_o, w_o) int64. projection: (C, H, W) float32, raw deconvnet
    projection of ``channel`` at ``position`` (its strongest activation) on the unoccluded image. window, stride:
    (height, width) in pixels. base_*: the same quantities on the unoccluded image; logits: (1, classes) float32
    on the unoccluded image.
    """

    input: np.ndarray
    layer: str
    channel: int
    position: tuple[int, int]
    target: int
    window: Pair
    stride: Pair
    fill: float
    activity: np.ndarray
    probability: np.ndarray
    label: np.ndarray
    projection: np.ndarray
    base_activity: float
    base_probability: float
    base_label: int
    logits: np.ndarray | None = None
    audit: list[AuditEntry] = field(default_factory=list)

    def corners(self) -> tuple[np.ndarray, np.ndarray]:
        """Top-left pixel (y, x) of the occluder for each row / column of the maps."""
        _, _, height, width = self.input.shape
        return (_starts(height, self.window[0], self.stride[0]), _starts(width, self.window[1], self.stride[1]))

    def arrays(self) -> dict[str, np.ndarray]:
        """The npz content: input, activity, probability, label, projection, channel, target, window, stride."""
        return {
            "input": self.input.astype(np.float32, copy=False),
            "activity": self.activity.astype(np.float32, copy=False),
            "probability": self.probability.astype(np.float32, copy=False),
            "label": self.label.astype(np.int64, copy=False),
            "projection": self.projection.astype(np.float32, copy=False),
            "channel": np.array(self.channel, dtype=np.int64),
            "target": np.array(self.target, dtype=np.int64),
            "window": np.array(self.window, dtype=np.int64),
            "stride": np.array(self.stride, dtype=np.int64),
        }


def _pair(value: int | tuple[int, int], name: str) -> Pair:
    try:
        pair = (value, value) if isinstance(value, (int, np.integer)) else tuple(value)
    except TypeError:
        pair = ()
    if len(pair) != 2 or not all(isinstance(v, (int, np.integer)) for v in pair):
        raise UserInputError(f"--{name} must be one integer or two (height, width), got {value!r}")
    return int(pair[0]), int(pair[1])


def check_window(window: int | tuple[int, int], stride: int | tuple[int, int], height: int, width: int
                 ) -> tuple[Pair, Pair]:
    """Validate occluder size and stride against an image of height x width; return them as (h, w) pairs."""
    win, step = _pair(window, "window"), _pair(stride, "stride")
    for axis, w, s, size in (("height", win[0], step[0], height), ("width", win[1], step[1], width)):
        if not 1 <= w <= size:
            raise UserInputError(f"--window {axis} {w} must be between 1 and the input {axis} {size}")
        if not 1 <= s <= w:
            raise UserInputError(f"--stride {axis} {s} must be between 1 and the window {axis} {w} "
                                 "(a larger stride would leave pixels never occluded)")
    return win, step


def default_window(height: int, width: int) -> tuple[int, int]:
    """Window and stride when none is given: a seventh of the shorter side, stride half of it (32 / 16 at 224)."""
    window = max(1, round(min(height, width) / 7))
    return window, max(1, window // 2)


def _starts(size: int, window: int, stride: int) -> np.ndarray:
    return np.arange(math.ceil((size - window) / stride) + 1) * stride


def occluded_batch(x: torch.Tensor, corners: list[Pair], window: Pair, fill: float) -> torch.Tensor:
    """Copies of x (1, C, H, W), one per corner, each with a window x window square set to ``fill``.

    Channels-last memory order: CPU convolutions (oneDNN) run it much faster; values are the same."""
    batch = x.expand(len(corners), *x.shape[1:]).contiguous(memory_format=torch.channels_last)
    for i, (y0, x0) in enumerate(corners):
        batch[i, :, y0 : y0 + window[0], x0 : x0 + window[1]] = fill
    return batch


def occlusion_maps(model: nn.Module, x: torch.Tensor, layer: str, *, window: int | tuple[int, int] = 32,
                   stride: int | tuple[int, int] = 16, target: int | None = None, batch: int = 64,
                   fill: float = 0.0, reference: DeconvOutput | None = None) -> OcclusionMaps:
    """Zeiler–Fergus occlusion maps of ``model`` for one image ``x`` (1, C, H, W), feature maps of ``layer``.

    ``batch`` occluded copies go through the model per forward pass (bounds memory; results do not depend on it).
    ``target`` defaults to the top class of the unoccluded image. ``reference``: a deconvnet run on the same image
    that projected ``layer`` (mode max) and ran to the logits; its strongest unit is reused for (b) instead of
    projecting again. The model is left exactly as it was.
    """
    if x.dim() != 4 or x.shape[0] != 1:
        raise UserInputError(f"occlusion takes one image of shape (1, C, H, W), got {tuple(x.shape)}")
    if batch < 1:
        raise UserInputError(f"--batch must be at least 1, got {batch}")
    _, _, height, width = x.shape
    win, step = check_window(window, stride, height, width)
    resolve_layers(model, [layer])
    x = x.detach().to(model_device(model))

    # (b) and the unoccluded reference: strongest feature map (by its peak, as deconv ranks), its projection, logits.
    reused = [lp for lp in reference.layers if lp.layer == layer and lp.mode == "max" and lp.units] if (
        reference is not None and reference.logits is not None) else []
    out = reference if reference is not None and reused else deconv(model, x, [layer], top_k=1, mode="max", logits=True)
    lp = reused[0] if reused else out.layers[0]
    unit = lp.units[0]
    if out.logits is None:
        raise UserInputError("the model returned no output; occlusion needs class scores")
    base_logits = out.logits.reshape(1, -1).float()
    n_classes = base_logits.shape[1]
    if target is None:
        target = int(base_logits.argmax())
    elif not 0 <= int(target) < n_classes:
        raise UserInputError(f"--target {target} is not a class of this model (0 ... {n_classes - 1})")
    target = int(target)

    ys, xs = _starts(height, win[0], step[0]), _starts(width, win[1], step[1])
    corners = [(int(y), int(xx)) for y in ys for xx in xs]
    activity = np.empty(len(corners), dtype=np.float64)
    probability = np.empty(len(corners), dtype=np.float64)
    label = np.empty(len(corners), dtype=np.int64)
    with preserve_model_state(model), torch.no_grad():
        for start in range(0, len(corners), batch):
            chunk = corners[start : start + batch]
            with Recorder(model, [layer]) as rec:
                logits = rec.run(occluded_batch(x, chunk, win, fill))
            assert logits is not None  # the unoccluded forward above returned class scores
            stop = start + len(chunk)
            grid = _as_grid(rec.outputs[layer])
            activity[start:stop] = grid[:, unit.channel].double().sum(dim=(1, 2)).cpu().numpy()
            logits = logits.reshape(len(chunk), -1).double()
            probability[start:stop] = torch.softmax(logits, dim=1)[:, target].cpu().numpy()
            label[start:stop] = logits.argmax(dim=1).cpu().numpy()
            del rec, logits, grid

    shape = (len(ys), len(xs))
    base = torch.softmax(base_logits.double(), dim=1)[0]
    return OcclusionMaps(
        input=x.float().cpu().numpy(), layer=layer, channel=unit.channel, position=unit.position, target=target,
        window=win, stride=step, fill=float(fill),
        activity=activity.reshape(shape).astype(np.float32),
        probability=probability.reshape(shape).astype(np.float32),
        label=label.reshape(shape), projection=unit.projection,
        base_activity=float(lp.activation_maps[0].astype(np.float64).sum()),
        base_probability=float(base[target]), base_label=int(base.argmax()),
        logits=base_logits.cpu().numpy(), audit=out.audit,
    )


def pixel_attribution(maps: OcclusionMaps) -> np.ndarray:
    """Captum's ``Occlusion`` attribution from the per-position map, exactly: (H, W) float64.

    For every pixel, the mean over the windows covering it of ``p(unoccluded) - p(occluded)`` of the target class.
    Captum with ``sliding_window_shapes=(C, wh, ww)``, ``strides=(C, sh, sw)``, ``baselines=fill`` on the
    softmax-wrapped model returns this map repeated over the C channels.
    """
    _, _, height, width = maps.input.shape
    total = np.zeros((height, width))
    count = np.zeros((height, width))
    ys, xs = maps.corners()
    drop = maps.base_probability - maps.probability.astype(np.float64)
    for i, y0 in enumerate(ys):
        for j, x0 in enumerate(xs):
            total[y0 : y0 + maps.window[0], x0 : x0 + maps.window[1]] += drop[i, j]
            count[y0 : y0 + maps.window[0], x0 : x0 + maps.window[1]] += 1
    return total / count


__all__ = ["OcclusionMaps", "check_window", "default_window", "occluded_batch", "occlusion_maps",
           "pixel_attribution"]
