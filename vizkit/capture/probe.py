"""Where a model lives and what it computes in: the one device/dtype lookup (a model may have no parameters), the
blank probe input built from them, and the number of classes a classifier returns."""
from __future__ import annotations

import torch
from torch import nn

from vizkit.capture.state import preserve_model_state
from vizkit.errors import ModelError

__all__ = ["model_device", "model_dtype", "num_classes", "probe_input"]


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


def probe_input(model: nn.Module, input_shape: tuple[int, ...]) -> torch.Tensor:
    """A blank (zero) input of ``input_shape`` on the model's device, in its dtype: what probe forwards run on."""
    return torch.zeros(input_shape, device=model_device(model), dtype=model_dtype(model))


def num_classes(model: nn.Module, input_shape: tuple[int, ...]) -> int:
    """The number of class scores the model returns (one forward on a blank input; the model is left as it was)."""
    with preserve_model_state(model), torch.no_grad():
        out = model(probe_input(model, input_shape))
    if not isinstance(out, torch.Tensor) or out.dim() != 2:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ModelError(f"the model returns {shape}, not class scores (N, classes); this command needs a "
                         "classifier")
    return int(out.shape[1])
