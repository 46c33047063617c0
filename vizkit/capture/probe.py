"""Where a model lives and what it computes in: the one device/dtype lookup (a model may have no parameters)."""
from __future__ import annotations

import torch
from torch import nn

__all__ = ["model_device", "model_dtype"]


def model_device(model: nn.Module) -> torch.device:
    """The first parameter's device, else the first buffer's, else the CPU (a pooling-only network is valid)."""
    for tensor in (*model.parameters(), *model.buffers()):
        return tensor.device
    return torch.device("cpu")


def model_dtype(model: nn.Module) -> torch.dtype:
    """The first floating-point parameter's dtype, else the first floating-point buffer's, else float32: what
    inputs are cast to."""
    for tensor in (*model.parameters(), *model.buffers()):
        if tensor.is_floating_point():
            return tensor.dtype
    return torch.float32
