"""Every ``*_tensor`` entry point, run on a model with a module that raises while vizkit's hooks are on it, leaves no
hook behind and the model exactly as it was: state dict, every module's training flag, requires_grad and .grad."""
from __future__ import annotations

import importlib
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import nn

from vizkit.commands import COMMANDS
from vizkit.jobs.context import RunContext
from vizkit.load import LoadedModel, Preprocessing
from vizkit.project.dream import DreamSettings, channel, class_logit
from vizkit.project.invariance import make_sweep
from vizkit.testing.model_state import flags, hook_count, state_fingerprint


class Boom(RuntimeError):
    pass


class Bomb(nn.Module):
    """Passes its input through, but raises ``Boom`` whenever any module of the model carries a hook: the entry
    point's error path runs with its hooks in place."""

    def __init__(self) -> None:
        super().__init__()
        self.watch: list[nn.Module] = []  # a plain list: not submodules, not in the state dict
        # a list, grown in place: attribution's guard restores every plain attribute a library set on a module
        self.fired_at: list[int] = []

    @property
    def fired(self) -> int:
        return len(self.fired_at)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if sum(hook_count(m) for m in self.watch if m is not self) > 0:
            self.fired_at.append(1)
            raise Boom("a module raised inside the forward")
        return x


def _model() -> tuple[nn.Sequential, Bomb]:
    torch.manual_seed(0)
    bomb = Bomb()
    model = nn.Sequential(OrderedDict([
        ("conv1", nn.Conv2d(3, 4, 3, padding=1)), ("relu1", nn.ReLU()), ("bomb", bomb), ("pool1", nn.MaxPool2d(2)),
        ("conv2", nn.Conv2d(4, 8, 3, padding=1)), ("relu2", nn.ReLU()), ("pool2", nn.MaxPool2d(2)),
        ("flatten", nn.Flatten(1)), ("fc", nn.Linear(8 * 8 * 8, 5)),
    ]))
    bomb.watch = [m for m in model.modules() if m is not model] + [model]
    # A state vizkit must give back as it found it: training mode with one module in eval, a frozen parameter,
    # an existing .grad.
    model.train()
    model.relu2.eval()
    model.conv1.bias.requires_grad_(False)
    model.fc.weight.grad = torch.ones_like(model.fc.weight)
    return model, bomb


def _ctx(model: nn.Module) -> RunContext:
    prep = Preprocessing(32, 32, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    loaded = LoadedModel("bomb", model, prep, None, "none (random init)", None, False)
    return RunContext.from_loaded(loaded)


ENTRY_POINTS: dict[str, Callable[[RunContext, torch.Tensor], Any]] = {
    "deconv_tensor": lambda ctx, x: _entry("deconv", "deconv_tensor")(ctx, x, ["conv2"], top_k=2),
    "activations_tensor": lambda ctx, x: _entry("activations", "activations_tensor")(ctx, x, ["conv2"], top=2),
    "gradcam_tensor": lambda ctx, x: _entry("gradcam", "gradcam_tensor")(ctx, x, "conv2", [None]),
    "occlusion_tensor": lambda ctx, x: _entry("occlusion", "occlusion_tensor")(
        ctx, x, layer="conv2", window=(8, 8), stride=(8, 8), sanity=False),
    "invariance_tensor": lambda ctx, x: _entry("invariance", "invariance_tensor")(
        ctx, x, [make_sweep("translate", 32, steps=3)], ["conv2"]),
    "attribute_tensor": lambda ctx, x: _entry("attribute", "attribute_tensor")(ctx, x, ["lrp", "gradcam"],
                                                                           layer="conv2"),
    "dream_tensor": lambda ctx, x: _entry("dream", "dream_tensor")(
        ctx, x, [channel("conv2", 1), class_logit(0)], DreamSettings(steps=1, size=32)),
}


def _entry(command: str, name: str) -> Callable[..., Any]:
    row = next(c for c in COMMANDS if c.name == command)
    return getattr(importlib.import_module(row.job), name)  # type: ignore[no-any-return]


def test_every_tensor_entry_point_is_covered() -> None:
    exported = {name for c in COMMANDS for name in c.exports if name.endswith("_tensor")}
    assert exported == set(ENTRY_POINTS)


def _caused_by_boom(err: BaseException | None) -> bool:
    while err is not None:
        if isinstance(err, Boom):
            return True
        err = err.__cause__ or err.__context__
    return False


@pytest.mark.parametrize("name", sorted(ENTRY_POINTS))
def test_a_raising_module_leaves_no_hook_and_the_model_unchanged(name: str) -> None:
    model, bomb = _model()
    ctx = _ctx(model)
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    before_state, before_flags = state_fingerprint(model), flags(model)
    with pytest.raises(Exception) as caught:  # any wrapping is fine as long as Boom is the cause
        ENTRY_POINTS[name](ctx, x)
    assert _caused_by_boom(caught.value), f"{name} did not reach a hooked forward: {caught.value!r}"
    assert bomb.fired >= 1
    assert hook_count(model) == 0
    after_state = state_fingerprint(model)
    assert after_state.keys() == before_state.keys()
    assert all(torch.equal(after_state[k], before_state[k]) for k in before_state)
    training, requires_grad, grads = flags(model)
    assert (training, requires_grad) == before_flags[:2]
    assert all(a is b for a, b in zip(grads, before_flags[2], strict=True))
