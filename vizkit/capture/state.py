"""Leave the user's model exactly as it was: training flags, requires_grad flags, .grad tensors, hooks.
(The tests' checks of that, ``hook_count`` and ``state_fingerprint``, live in ``vizkit.testing``.)"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn


@contextmanager
def preserve_model_state(model: nn.Module, *, eval_mode: bool = True, freeze: bool = True) -> Iterator[nn.Module]:
    """Run a block on ``model`` in eval mode with frozen parameters, then restore every flag.

    Each module's own ``training`` flag is restored (not just ``model.train(prev)``, which would flatten a model
    whose submodules were deliberately in different modes), as are ``requires_grad`` and the ``.grad`` objects.
    Freezing parameters means the forward saves nothing for weight gradients, which vizkit never needs.
    """
    training = {m: m.training for m in model.modules()}
    params = list(model.parameters())
    requires_grad = [p.requires_grad for p in params]
    grads = [p.grad for p in params]
    try:
        if eval_mode:
            model.eval()
        if freeze:
            for p in params:
                p.requires_grad_(False)
        yield model
    finally:
        for m, flag in training.items():
            m.training = flag
        for p, flag, grad in zip(params, requires_grad, grads, strict=True):
            p.requires_grad_(flag)
            p.grad = grad


def forward_for_shapes(model: nn.Module, input_shape: tuple[int, ...]) -> object:
    """``model`` on zeros of ``input_shape`` for shapes, hooks and call order, never for values: on meta copies of
    its parameters and buffers (swapped in by ``torch.func.functional_call`` for this call only; no arithmetic, no
    memory) when every op can run there, else on real zeros on the model's device."""
    from vizkit.capture.probe import model_device, model_dtype  # probe stands on this module

    named = [*model.named_parameters(remove_duplicate=False), *model.named_buffers(remove_duplicate=False)]
    dtype = model_dtype(model)
    try:
        meta = {k: t.detach().to("meta") for k, t in named}
        return torch.func.functional_call(model, meta, (torch.zeros(input_shape, dtype=dtype, device="meta"),),
                                          tie_weights=False, strict=False)
    except Exception:  # noqa: BLE001 - an op without a meta kernel or data-dependent code: run it for real
        return model(torch.zeros(input_shape, dtype=dtype, device=model_device(model)))
