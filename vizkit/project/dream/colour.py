"""Decorrelated colour (Olah et al. 2017, Lucid's ``color_correlation_svd_sqrt``).

Natural photos have strongly correlated R, G and B. Lucid optimises in a decorrelated colour space and maps back
with ``M = U sqrt(S)``, where ``U S U^T`` is the SVD of ImageNet's RGB covariance: ``M M^T`` is that covariance and
``M``'s columns are orthogonal (luminance first, then two opponent axes). Like Lucid, the columns are scaled by the
largest column norm, so the luminance axis has unit length.
"""
from __future__ import annotations

import numpy as np
import torch

__all__ = ["COLOUR_SVD_SQRT", "colour_matrix", "decorrelate", "recorrelate"]

#: Lucid's ``color_correlation_svd_sqrt`` (lucid/optvis/param/color.py), rows R, G, B.
COLOUR_SVD_SQRT = np.array([[0.26, 0.09, 0.02],
                            [0.27, 0.00, -0.05],
                            [0.27, -0.09, 0.03]], dtype=np.float32)


def colour_matrix(device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``M`` normalised by its largest column norm (Lucid's ``color_correlation_normalized``), shape (3, 3)."""
    m = COLOUR_SVD_SQRT / np.max(np.linalg.norm(COLOUR_SVD_SQRT, axis=0))
    return torch.as_tensor(m, device=device, dtype=dtype)


def recorrelate(x: torch.Tensor) -> torch.Tensor:
    """Decorrelated (B, 3, H, W) -> RGB-correlated: ``rgb[c] = sum_k M[c, k] x[k]`` at every pixel."""
    return torch.einsum("ck,bkhw->bchw", colour_matrix(x.device, x.dtype), x)


def decorrelate(x: torch.Tensor) -> torch.Tensor:
    """The inverse of :func:`recorrelate`."""
    inv = torch.linalg.inv(colour_matrix(x.device, torch.float64)).to(x.dtype)
    return torch.einsum("ck,bkhw->bchw", inv, x)
