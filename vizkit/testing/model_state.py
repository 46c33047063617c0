"""Checks that a call left the model as it was: no hook left behind, the same state dict and flags."""
from __future__ import annotations

import torch
from torch import nn

__all__ = ["flags", "hook_count", "state_fingerprint"]


def hook_count(model: nn.Module) -> int:
    """Number of hooks registered on any submodule (tests use it to prove nothing leaks)."""
    total = 0
    for m in model.modules():
        for attr in ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks"):
            total += len(getattr(m, attr, {}) or {})
    return total


def state_fingerprint(model: nn.Module) -> dict[str, torch.Tensor]:
    """A detached copy of the state dict, to compare before and after a call."""
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def flags(model: nn.Module) -> tuple[list[bool], list[bool], list[torch.Tensor | None]]:
    """Every module's ``training`` flag, every parameter's ``requires_grad`` and ``.grad`` object, in order."""
    params = list(model.parameters())
    return [m.training for m in model.modules()], [p.requires_grad for p in params], [p.grad for p in params]
