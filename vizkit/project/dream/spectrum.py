"""MACO's fixed magnitude spectrum (Fel et al. 2023), computed offline from natural photos.

MACO optimises only the phase of an image's Fourier transform; the magnitude is the average magnitude spectrum of
natural images in decorrelated colour. vizkit ships one computed from the colour photos bundled with its own
dependencies (``SPECTRUM_PHOTOS``), and :func:`spectrum_from` computes one from any photos. Nothing is downloaded.

    python -m vizkit.project.dream.spectrum [OUT.npy] [--size 256]   # remakes the shipped file
"""
from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from vizkit.errors import UserInputError
from vizkit.load.images import load_image
from vizkit.project.dream.colour import decorrelate

__all__ = ["SHIPPED_SPECTRUM", "SPECTRUM_PHOTOS", "magnitude_for", "shipped_spectrum", "spectrum_from",
           "spectrum_photos"]

SHIPPED_SPECTRUM = Path(__file__).with_name("data") / "maco_spectrum.npy"
#: scikit-image's bundled colour photos (no download), plus matplotlib's Grace Hopper.
SPECTRUM_PHOTOS = ("astronaut.png", "chelsea.png", "coffee.png", "motorcycle_left.png", "rocket.jpg")


def spectrum_photos() -> list[Path]:
    """The natural colour photos the shipped spectrum is computed from."""
    import matplotlib.cbook
    import skimage.data

    data = Path(skimage.data.data_dir)
    hopper = Path(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))
    return [data / name for name in SPECTRUM_PHOTOS] + [hopper]


def spectrum_from(paths: Sequence[str | os.PathLike], size: int = 256, crops: int = 24,
                  seed: int = 0) -> np.ndarray:
    """Mean magnitude of ``rfft2`` of mean-free, decorrelated random square crops (35–100 % of the shorter side,
    resized to ``size``), ``crops`` per photo: float32 (3, size, size // 2 + 1)."""
    if not paths:
        raise UserInputError("spectrum_from needs at least one photo: pass image files (e.g. --spectrum-from DIR)")
    rng = np.random.default_rng(seed)
    total = torch.zeros(3, size, size // 2 + 1, dtype=torch.float64)
    for path in paths:
        img = load_image(path)
        w, h = img.size
        batch = []
        for _ in range(crops):
            side = max(8, int(min(w, h) * rng.uniform(0.35, 1.0)))
            left, top = int(rng.integers(0, w - side + 1)), int(rng.integers(0, h - side + 1))
            crop = img.crop((left, top, left + side, top + side)).resize((size, size))
            batch.append(torch.from_numpy(np.asarray(crop, dtype=np.float32) / 255.0).permute(2, 0, 1))
        x = torch.stack(batch)
        x = decorrelate(x - x.mean(dim=(2, 3), keepdim=True))
        total += torch.fft.rfft2(x.double()).abs().sum(0)
    return (total / (len(paths) * crops)).float().numpy()


def shipped_spectrum() -> np.ndarray:
    """The spectrum shipped with vizkit (computed by ``spectrum_from(spectrum_photos())``)."""
    return np.load(SHIPPED_SPECTRUM).astype(np.float32)


def magnitude_for(spectrum: np.ndarray | torch.Tensor, size: int) -> torch.Tensor:
    """Resample a (3, S, S // 2 + 1) magnitude spectrum to a ``size`` canvas: (3, size, size // 2 + 1).

    The full-length axis is shifted so frequency 0 sits in the middle before resampling (and back after), so
    positive and negative frequencies are never blended across the wrap-around.
    """
    mag = torch.as_tensor(np.asarray(spectrum, dtype=np.float32))
    if mag.dim() != 3 or mag.shape[0] != 3 or mag.shape[2] != mag.shape[1] // 2 + 1:
        raise UserInputError(f"a MACO spectrum has shape (3, S, S//2+1), got {tuple(mag.shape)}")
    if mag.shape[1] == size:
        return mag
    shifted = torch.fft.fftshift(mag, dim=1)
    out = F.interpolate(shifted[None], size=(size, size // 2 + 1), mode="bilinear", align_corners=False,
                        antialias=True)[0]
    return torch.fft.ifftshift(out, dim=1).clamp_min(0)


def main() -> None:
    parser = argparse.ArgumentParser(description="Compute MACO's magnitude spectrum from natural photos.")
    parser.add_argument("out", nargs="?", default=str(SHIPPED_SPECTRUM))
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--from", dest="paths", nargs="*", help="photos (default: the bundled sample photos)")
    args = parser.parse_args()
    spec = spectrum_from(args.paths or spectrum_photos(), size=args.size)
    np.save(args.out, spec.astype(np.float16))
    print(f"{args.out}: {spec.shape} from {len(args.paths or spectrum_photos())} photos")


if __name__ == "__main__":
    main()
