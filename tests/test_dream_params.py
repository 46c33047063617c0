"""Dream parameterisations, colour decorrelation, MACO spectrum and random views, against independent oracles."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from vizkit.load import load_image
from vizkit.project.dream import TransformSettings, element_generator, magnitude_for, shipped_spectrum, spectrum_from
from vizkit.project.dream.colour import colour_matrix, decorrelate, recorrelate
from vizkit.project.dream.params import FourierParam, MacoParam, PixelParam
from vizkit.project.dream.spectrum import spectrum_photos
from vizkit.project.dream.transforms import sample_views


def gens(n: int, seed: int = 0) -> list[torch.Generator]:
    return [element_generator(seed, i) for i in range(n)]


def photo_pixels() -> np.ndarray:
    """(N, 3) RGB pixels in [0, 1] of the natural photos the spectrum uses, subsampled."""
    px = [np.asarray(load_image(p).resize((96, 96)), dtype=np.float64).reshape(-1, 3) / 255 for p in spectrum_photos()]
    return np.concatenate(px)


def test_colour_matrix_is_an_svd_square_root_of_natural_colour_covariance() -> None:
    m = colour_matrix().double().numpy()
    gram = m.T @ m  # U sqrt(S): orthogonal columns, so M^T M = S is diagonal
    assert np.abs(gram - np.diag(np.diag(gram))).max() < 0.02 * gram.max()
    assert np.linalg.norm(m, axis=0).max() == pytest.approx(1.0)
    cov = np.cov(photo_pixels().T)
    top = np.linalg.eigh(cov)[1][:, -1]
    assert abs(float(m[:, 0] @ top)) / np.linalg.norm(m[:, 0]) > 0.95  # first axis: natural photos' luminance
    x = torch.from_numpy((photo_pixels() - photo_pixels().mean(0)).T.reshape(1, 3, -1, 1)).float()
    rgb_corr = np.corrcoef(x[0, :, :, 0].numpy())
    white_corr = np.corrcoef(decorrelate(x)[0, :, :, 0].numpy())
    off = ~np.eye(3, dtype=bool)
    assert np.abs(white_corr[off]).mean() < np.abs(rgb_corr[off]).mean() / 2  # it decorrelates natural colour
    torch.testing.assert_close(recorrelate(decorrelate(x)), x, atol=1e-5, rtol=1e-5)


def test_fourier_and_pixel_parameterisations_of_an_image_map_back_to_it() -> None:
    img = torch.rand(2, 3, 24, 24) * 0.9 + 0.05
    torch.testing.assert_close(FourierParam(gens(2), 24, init=img).image(), img, atol=1e-4, rtol=0)
    torch.testing.assert_close(PixelParam(gens(2), 24, init=img).image(), img, atol=1e-5, rtol=0)
    torch.testing.assert_close(PixelParam(gens(2), 24, init=img, norm=1.0).image().sub(0.5).flatten(1).norm(dim=1),
                               torch.ones(2))


def test_fourier_scaling_is_one_over_f() -> None:
    p = FourierParam(gens(1), 32, decay_power=1.0)
    assert p.scale[0, 1] / p.scale[0, 2] == pytest.approx(2.0) and p.scale[2, 0] / p.scale[4, 0] == pytest.approx(2.0)
    assert p.scale[0, 0] == p.scale[0, 1]  # the lowest frequencies are capped at 1 / size


def test_maco_keeps_the_magnitude_and_optimises_only_the_phase() -> None:
    spec = shipped_spectrum()
    p = MacoParam(gens(2), 32, spectrum=spec)
    assert [t.shape for t in p.tensors] == [(2, 3, 32, 17)]
    torch.testing.assert_close(p.image(), torch.sigmoid(recorrelate(p.spatial())))
    mag = torch.fft.rfft2(p.spatial().detach().double()).abs()
    ref = magnitude_for(spec, 32).double()
    ratio = (mag / ref.clamp_min(1e-9))[..., 1:-1]  # columns 0 and N/2 must be Hermitian: irfft2 projects them
    assert float((ratio.std((1, 2, 3)) / ratio.mean((1, 2, 3))).max()) < 0.1


def test_shipped_spectrum_is_what_spectrum_from_computes_from_the_bundled_photos() -> None:
    again = spectrum_from(spectrum_photos(), size=64, crops=4)
    shipped = magnitude_for(shipped_spectrum(), 64).numpy()
    assert again.shape == shipped.shape == (3, 64, 33)
    corr = np.corrcoef(np.log(again[:, 1:, 1:].ravel()), np.log(shipped[:, 1:, 1:].ravel()))[0, 1]
    assert corr > 0.95
    fy = np.abs(np.fft.fftfreq(64))[:, None]
    fx = np.fft.rfftfreq(64)[None, :]
    f = np.sqrt(fx**2 + fy**2)[1:, 1:].ravel()
    slope = np.polyfit(np.log(f), np.log(again[0, 1:, 1:].ravel()), 1)[0]
    assert -2.0 < slope < -0.8  # natural images: magnitude falls roughly as 1 / f
    assert magnitude_for(shipped_spectrum(), 256).shape == (3, 256, 129)


def test_views_are_identity_without_transforms_and_independent_per_element() -> None:
    img = torch.rand(3, 3, 20, 20)
    none = TransformSettings(crops=1, pad=0, jitter=0, scale=(1, 1), angle=0, crop_box=(1, 1), crop_spread=0,
                             noise=0)
    torch.testing.assert_close(sample_views(img, gens(3), none, 20), img, atol=1e-5, rtol=0)
    t = TransformSettings(crops=3)
    both = sample_views(img, gens(3, seed=7), t, 16)
    assert both.shape == (9, 3, 16, 16)
    for i in range(3):
        alone = sample_views(img[i:i + 1], [element_generator(7, i)], t, 16)
        torch.testing.assert_close(both[3 * i:3 * i + 3], alone)
    assert not torch.allclose(both[0], both[1])
