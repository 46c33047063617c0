"""Image parameterisations: what the optimiser changes, and how it becomes a (B, 3, H, W) image in [0, 1].

- ``pixel``: one logit per pixel (``sigmoid``), or with ``norm`` a direction scaled onto a sphere of that L2 radius
  around grey (``0.5 + norm * v / |v|``): the norm-bounded problem whose optimum for a linear unit is its filter.
- ``fourier``: Lucid's ``fft_image``: a spectrum scaled by ``1 / f ** decay_power`` (and ``sqrt(H W)``), ``irfft2``,
  divided by 4, recorrelated colour (:mod:`.colour`), sigmoid.
- ``maco``: MACO: the phase only, under a fixed magnitude spectrum (:mod:`.spectrum`); the spatial image is
  standardised, recorrelated and squashed by a sigmoid as in the paper's code.

Every element of the batch draws its initial values from its own generator, so a batch equals its elements made
one at a time. Each parameterisation can also start from images (``init``): pixel and fourier reproduce them
exactly; maco keeps its fixed magnitude and takes the images' phase.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch

from vizkit.errors import UserInputError
from vizkit.project.dream.colour import decorrelate, recorrelate
from vizkit.project.dream.spectrum import magnitude_for

__all__ = ["METHODS", "FourierParam", "MacoParam", "Param", "PixelParam", "make_param"]

METHODS = ("fourier", "maco", "pixel")
_EPS = 1e-4


def _logit(img: torch.Tensor) -> torch.Tensor:
    img = img.clamp(1e-3, 1 - 1e-3)
    return torch.log(img / (1 - img))


def _randn(gens: Sequence[torch.Generator], shape: tuple[int, ...], scale: float) -> torch.Tensor:
    """One (len(gens), *shape) tensor, row i drawn from gens[i] (on the CPU, so devices agree)."""
    return torch.stack([torch.randn(shape, generator=g) * scale for g in gens])


def _standardise(x: torch.Tensor) -> torch.Tensor:
    """Zero mean, unit std per batch element."""
    dims = tuple(range(1, x.dim()))
    return (x - x.mean(dims, keepdim=True)) / (x.std(dims, keepdim=True) + _EPS)


class Param:
    """Base: ``tensors`` are optimised, ``image()`` is the (B, 3, H, W) picture in [0, 1]."""

    tensors: list[torch.Tensor]

    def image(self) -> torch.Tensor:
        raise NotImplementedError


class PixelParam(Param):
    def __init__(self, gens: Sequence[torch.Generator], size: int, *, norm: float | None = None,
                 init: torch.Tensor | None = None, device: torch.device | str = "cpu") -> None:
        self.norm = norm
        if init is not None:
            v = init - 0.5 if norm is not None else _logit(init)
        else:
            v = _randn(gens, (3, size, size), 0.01)
        self.v = v.to(device, torch.float32).clone().requires_grad_(True)
        self.tensors = [self.v]

    def image(self) -> torch.Tensor:
        if self.norm is None:
            return torch.sigmoid(self.v)
        length = self.v.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
        return (0.5 + self.norm * self.v / length).clamp(0, 1)


def _fft_scale(size: int, decay_power: float) -> torch.Tensor:
    """Lucid's ``1 / max(f, 1 / size) ** decay_power * sqrt(size * size)`` on the rfft2 grid."""
    fy = torch.fft.fftfreq(size)[:, None]
    fx = torch.fft.rfftfreq(size)[None, :]
    freqs = torch.sqrt(fx**2 + fy**2)
    return 1.0 / torch.clamp(freqs, min=1.0 / size) ** decay_power * float(size)


class FourierParam(Param):
    def __init__(self, gens: Sequence[torch.Generator], size: int, *, decay_power: float = 1.0,
                 init: torch.Tensor | None = None, device: torch.device | str = "cpu") -> None:
        self.size = size
        self.scale = _fft_scale(size, decay_power).to(device)
        if init is not None:
            spec = torch.fft.rfft2(decorrelate(_logit(init.to(device, torch.float32))) * 4.0) / self.scale
            re, im = spec.real, spec.imag
        else:
            shape = (3, size, size // 2 + 1)
            pair = torch.stack([torch.randn((2, *shape), generator=g) * 0.01 for g in gens]).to(device)
            re, im = pair[:, 0], pair[:, 1]
        self.re = re.contiguous().requires_grad_(True)
        self.im = im.contiguous().requires_grad_(True)
        self.tensors = [self.re, self.im]

    def image(self) -> torch.Tensor:
        spec = torch.complex(self.re, self.im) * self.scale
        spatial = torch.fft.irfft2(spec, s=(self.size, self.size)) / 4.0
        return torch.sigmoid(recorrelate(spatial))


class MacoParam(Param):
    def __init__(self, gens: Sequence[torch.Generator], size: int, *, spectrum: object,
                 init: torch.Tensor | None = None, device: torch.device | str = "cpu") -> None:
        self.size = size
        self.magnitude = magnitude_for(spectrum, size).to(device)  # type: ignore[arg-type]
        if init is not None:
            phase = torch.angle(torch.fft.rfft2(decorrelate(_logit(init.to(device, torch.float32)))))
        else:
            phase = _randn(gens, (3, size, size // 2 + 1), 1.0).to(device)
        self.phase = phase.contiguous().requires_grad_(True)
        self.tensors = [self.phase]
        self._from_image = init is not None

    def spatial(self) -> torch.Tensor:
        """The standardised image in decorrelated colour, before the colour and the sigmoid."""
        # A random-normal phase is standardised as in MACO's code; a phase taken from an image is used as it is.
        phase = self.phase if self._from_image else _standardise(self.phase)
        spec = torch.polar(self.magnitude.expand_as(phase), phase)
        return _standardise(torch.fft.irfft2(spec, s=(self.size, self.size)))

    def image(self) -> torch.Tensor:
        return torch.sigmoid(recorrelate(self.spatial()))


def make_param(method: str, gens: Sequence[torch.Generator], size: int, *, device: torch.device | str,
               init: torch.Tensor | None = None, spectrum: object = None, norm: float | None = None,
               decay_power: float = 1.0) -> Param:
    """Build the parameterisation ``method`` for ``len(gens)`` images of ``size`` px."""
    if method == "pixel":
        return PixelParam(gens, size, norm=norm, init=init, device=device)
    if method == "fourier":
        return FourierParam(gens, size, decay_power=decay_power, init=init, device=device)
    if method == "maco":
        if spectrum is None:
            raise UserInputError("method maco needs a magnitude spectrum (shipped_spectrum() or spectrum_from(paths))")
        return MacoParam(gens, size, spectrum=spectrum, init=init, device=device)
    raise UserInputError(f"unknown method {method!r}: use one of {', '.join(METHODS)}")
