"""Feature visualisation by optimisation, many objectives at once.

Every batch element has its own objective, its own random start and its own random views (each from a generator
seeded by ``(seed, objective index, copy)``), so U objectives take ``ceil(U / batch_size)`` optimisations and the
result does not depend on the batch size. Images are optimised in display space [0, 1]; the model sees them after
its own preprocessing (mean/std). The model is left exactly as it was (``preserve_model_state``); hooks exist only
inside each forward's ``with`` block.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from vizkit.capture.state import preserve_model_state
from vizkit.errors import UserInputError
from vizkit.project.dream.forward import default_diversity_layer, diversity_penalty, forward_values, model_device
from vizkit.project.dream.objectives import Objective
from vizkit.project.dream.params import METHODS, make_param
from vizkit.project.dream.result import DreamResult
from vizkit.project.dream.spectrum import shipped_spectrum
from vizkit.project.dream.transforms import TransformSettings, sample_views

__all__ = ["DreamSettings", "dream", "element_generator"]

Progress = Callable[[int, int], None]
#: Learning rate and optimiser per method: Lucid's Adam(0.05) for pixel and Fourier, MACO's NAdam(1.0).
_OPTIM = {"pixel": ("adam", 0.05), "fourier": ("adam", 0.05), "maco": ("nadam", 1.0)}


@dataclass(frozen=True)
class DreamSettings:
    """How images are made (every field goes into the manifest).

    ``size``: canvas px; ``input_size``: px of the views the model sees (None: the canvas size); ``progressive``:
    start the views at this fraction of ``input_size``, growing linearly to full size at 3/4 of the steps (None:
    full size throughout; the default halves the early steps' cost on a CPU); ``precision``: ``fp32`` or ``bf16``
    (autocast of the model's forward only); ``from_weight``: pull towards the start image in feature
    accentuation; ``norm``: the pixel method's L2 radius around grey.
    """

    method: str = "maco"
    steps: int = 48
    size: int = 224
    input_size: int | None = None
    lr: float | None = None
    batch_size: int = 8
    seed: int = 0
    diversity: int = 1
    diversity_weight: float = 1.0
    diversity_layer: str | None = None
    from_weight: float = 1.0
    norm: float | None = None
    decay_power: float = 1.0
    progressive: float | None = 0.5
    channels_last: bool = False
    precision: str = "fp32"
    transforms: TransformSettings = field(default_factory=TransformSettings)

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise UserInputError(f"unknown method {self.method!r}: use one of {', '.join(METHODS)}")
        if self.steps < 1 or self.size < 8 or self.batch_size < 1 or self.diversity < 1:
            raise UserInputError("steps, batch size and diversity must be at least 1 and size at least 8 px")
        if self.precision not in ("fp32", "bf16"):
            raise UserInputError(f"precision must be fp32 or bf16, got {self.precision!r}")
        if self.progressive is not None and not 0 < self.progressive <= 1:
            raise UserInputError(f"progressive is a start fraction in (0, 1], got {self.progressive}")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["optimiser"], default_lr = _OPTIM[self.method]
        d["lr"] = self.lr if self.lr is not None else default_lr
        return d


def element_generator(seed: int, index: int, copy: int = 0) -> torch.Generator:
    """The generator of one batch element: a function of (seed, objective index, copy) only."""
    state = np.random.SeedSequence([seed, index, copy]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


def view_size(s: DreamSettings, full: int, step: int) -> int:
    """The px of the views at ``step`` (progressive resolution; ``full`` without it)."""
    if s.progressive is None:
        return full
    ramp = min(1.0, step / max(1.0, 0.75 * (s.steps - 1)))
    frac = s.progressive + (1 - s.progressive) * ramp
    return min(full, max(16, round(full * frac / 16) * 16))


def dream(model: nn.Module, objectives: Sequence[Objective], *, mean: Sequence[float], std: Sequence[float],
          settings: DreamSettings | None = None, from_images: torch.Tensor | None = None,
          spectrum: object = None, progress: Progress | None = None, first_index: int = 0) -> DreamResult:
    """Make ``settings.diversity`` images per objective; see :class:`DreamSettings` and the module docstring.

    ``from_images``: (U, 3, H, W) or (1, 3, H, W) start images in [0, 1] (feature accentuation, Hamblin et al.
    2024): each starts from its image and is pulled back towards it with weight ``from_weight``. ``spectrum``:
    MACO's magnitude (default: the shipped one). ``first_index``: the index of ``objectives[0]`` in a longer list
    shared out between processes, so that each element's generator, and so its image, is the same as in one run.
    """
    s = settings or DreamSettings()
    if not objectives:
        raise UserInputError("dream needs at least one objective (a unit, a class or a callable)")
    if from_images is not None and from_images.shape[0] not in (1, len(objectives)):
        raise UserInputError(f"{from_images.shape[0]} start images for {len(objectives)} objectives: give one "
                             "image, or one per objective")
    if s.method == "maco" and spectrum is None:
        spectrum = shipped_spectrum()
    device = model_device(model)
    elements = [(i, j) for i in range(len(objectives)) for j in range(s.diversity)]
    per_batch = max(s.diversity, s.batch_size // s.diversity * s.diversity)  # an objective's copies share a batch
    batches = [elements[k:k + per_batch] for k in range(0, len(elements), per_batch)]
    total, done = s.steps * len(batches), 0
    images, alphas, history = [], [], []
    with preserve_model_state(model):
        div_layer = (s.diversity_layer or default_diversity_layer(model)) if s.diversity > 1 else None
        for batch in batches:
            def tick(n: int) -> None:
                nonlocal done
                done += n
                if progress is not None:
                    progress(done, total)

            img, alpha, hist = _optimise_batch(model, [objectives[i] for i, _ in batch], batch, first_index, s,
                                               mean, std, device, from_images, spectrum, div_layer, tick)
            images.append(img)
            alphas.append(alpha)
            history.append(hist)
        all_images = torch.cat(images)
        scores = _final_scores(model, all_images, [objectives[i] for i, _ in elements], s, mean, std, device)
    return DreamResult(
        objectives=[objectives[i].name for i, _ in elements],
        images=all_images.numpy().astype(np.float32), scores=scores,
        reference=np.full(len(elements), np.nan, dtype=np.float32),
        alpha=torch.cat(alphas).numpy() if s.method == "maco" else None,
        settings=s.to_dict(), history=np.concatenate(history, axis=1))


def _normalise(x: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    if len(mean) == 1 and x.shape[1] == 3:  # a grayscale model sees the image's luminance (ITU-R 601 weights)
        x = torch.einsum("c,bchw->bhw", torch.tensor([0.299, 0.587, 0.114], dtype=x.dtype, device=x.device),
                         x).unsqueeze(1)
    m = torch.as_tensor(mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    sd = torch.as_tensor(std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    return (x - m) / sd


def _model_input(x: torch.Tensor, s: DreamSettings, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    x = _normalise(x, mean, std)
    return x.contiguous(memory_format=torch.channels_last) if s.channels_last else x


def _autocast(s: DreamSettings, device: torch.device) -> AbstractContextManager:
    if s.precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return nullcontext()


def _optimise_batch(model: nn.Module, objs: list[Objective], batch: list[tuple[int, int]], first_index: int,
                    s: DreamSettings, mean: Sequence[float], std: Sequence[float], device: torch.device,
                    from_images: torch.Tensor | None, spectrum: object, div_layer: str | None,
                    tick: Callable[[int], None]) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    gens = [element_generator(s.seed, first_index + i, j) for i, j in batch]
    init = None
    if from_images is not None:
        picked = from_images[[0 if from_images.shape[0] == 1 else i for i, _ in batch]].float()
        init = F.interpolate(picked, size=(s.size, s.size), mode="bilinear", antialias=True).clamp(0, 1)
    param = make_param(s.method, gens, s.size, device=device, init=init, spectrum=spectrum, norm=s.norm,
                       decay_power=s.decay_power)
    target = param.image().detach() if init is not None else None  # reachable by construction (as horama does)
    kind, default_lr = _OPTIM[s.method]
    opt_cls = torch.optim.NAdam if kind == "nadam" else torch.optim.Adam
    opt = opt_cls(param.tensors, lr=s.lr if s.lr is not None else default_lr)
    full = s.input_size or s.size
    alpha = torch.zeros(len(batch), s.size, s.size, device=device)
    hist = np.zeros((s.steps, len(batch)), dtype=np.float32)
    for step in range(s.steps):
        img = param.image()
        views = sample_views(img, gens, s.transforms, view_size(s, full, step))
        with _autocast(s, device):
            values, feats = forward_values(model, _model_input(views, s, mean, std), objs, s.transforms.crops,
                                           div_layer)
        loss = -values.sum()
        if feats is not None:
            loss = loss + s.diversity_weight * diversity_penalty(feats, s.transforms.crops, s.diversity)
        if target is not None:
            loss = loss + s.from_weight * (img - target).square().flatten(1).mean(1).sum()
        grads = torch.autograd.grad(loss, [*param.tensors, img])
        for t, g in zip(param.tensors, grads, strict=False):
            t.grad = g
        opt.step()
        alpha += grads[-1].abs().sum(1)
        hist[step] = values.detach().cpu().numpy()
        tick(1)
    return param.image().detach().cpu(), alpha.cpu(), hist


@torch.no_grad()
def _final_scores(model: nn.Module, images: torch.Tensor, objs: list[Objective], s: DreamSettings,
                  mean: Sequence[float], std: Sequence[float], device: torch.device) -> np.ndarray:
    """Each objective on its own final image, resized to the model's input size, without any transform."""
    size = s.input_size or s.size
    out = []
    for k in range(0, len(objs), max(1, s.batch_size)):
        x = images[k:k + s.batch_size].to(device)
        if x.shape[-1] != size:
            x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True)
        values, _ = forward_values(model, _normalise(x, mean, std), objs[k:k + s.batch_size], 1, None)
        out.append(values.float().cpu())
    return torch.cat(out).numpy().astype(np.float32) if out else np.zeros(0, np.float32)


def batches_needed(units: int, batch_size: int, diversity: int = 1) -> int:
    """``ceil(units * diversity / batch)``: the optimisations a dream of ``units`` objectives takes."""
    per_batch = max(diversity, batch_size // diversity * diversity)
    return math.ceil(units * diversity / per_batch)
