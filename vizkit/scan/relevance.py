"""Relevance-ranked scans (``vizkit mine --rank relevance --class C``): CRP's relevance maximisation (RelMax) through
zennit, on zennit-crp's definition, as a pluggable scorer of ``vizkit.scan.state.scan_batches``.

zennit-crp's ``FeatureVisualization`` (relevance mode, its defaults ``max_target="sum"``, ``abs_norm=True``) ranks
the images of channel c of layer L by

    r_c = sum_hw R_L[c] / (sum_c' |sum_hw R_L[c']| + 1e-10)

where ``R_L`` is the LRP relevance at L's output for the class score (seeded ``one_hot * logits``) under a zennit
composite (EpsilonPlusFlat by default, with the model's canonizers); its position is the first row-major maximum of
``R_L[c]`` (zennit-crp's ``rf_neuron``). ``RelevanceScorer`` computes exactly that for every requested layer with
one forward and one backward per batch (``autograd.grad`` to all layer outputs at once; the graph starts at the
shallowest layer, no parameter gradients) and hands it to the scan as ``Reduced`` (maximum = r_c, argmax = that
position, mean = r_c), so the top-K merge, the tie rule, checkpoints and the ``torchrun`` all-gather are the
activation scan's own. The model is left exactly as it was (``guarded``: every zennit hook, canonizer and flag).
"""
from __future__ import annotations

from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from vizkit.capture.hooks import Hooks
from vizkit.capture.recorder import resolve_layers
from vizkit.errors import ModelError, UserInputError
from vizkit.scan.scorer import Reduced
from vizkit.scan.topk import ACTIVATION, RELEVANCE

__all__ = ["ABS_NORM_EPS", "RANKS", "RelevanceScorer", "RelevanceScoring", "parse_class", "relevance_reduce"]

RANKS = (ACTIVATION, RELEVANCE)
ABS_NORM_EPS = 1e-10  # zennit-crp's ChannelConcept.reference_sampling
SHOWN_CLASSES = 5


def relevance_reduce(name: str, relevance: torch.Tensor) -> Reduced:
    """(B, C, ...) relevance at a layer's output -> per (image, channel) zennit-crp's normalised channel relevance
    and the first row-major position of its largest relevance (``ChannelConcept.reference_sampling``)."""
    r = relevance.detach()
    if r.dim() < 2:
        raise ModelError(f"layer '{name}' outputs shape {tuple(r.shape)}; relevance mining needs (B, C, ...)")
    flat = r.reshape(*r.shape[:2], -1)
    position = torch.argmax(flat, dim=-1)
    summed = torch.sum(flat, dim=-1)
    share = summed / (torch.abs(summed).sum(-1).view(-1, 1) + ABS_NORM_EPS)
    grid = (int(r.shape[2]), int(r.shape[3])) if r.dim() == 4 else (1, int(flat.shape[-1]))
    share = share.float()
    return Reduced(share, position, share, grid)


class RelevanceScorer:
    """One forward under a zennit composite and one backward per batch: every requested layer's channel relevance
    for class ``target``. Hooks, composite and canonizers exist only inside ``with``; the model is left as it was.
    ``scan_batches`` runs it with gradients on (``needs_grad``).

    ``batch_size``: every backward runs on that many images (a smaller batch is padded with copies of its first
    image, whose results are dropped; default: the largest batch met so far). The backward's kernels depend on the
    batch size in the last bits, so this is what makes a shard of ``torchrun``, a resumed run and one process give
    bit-identical values."""

    needs_grad = True

    def __init__(self, model: nn.Module, layers: Sequence[str], target: int, composite: str | None = None,
                 batch_size: int = 0) -> None:
        from vizkit.project.attribute.lrp import DEFAULT_COMPOSITE

        self.model = model
        self.modules = resolve_layers(model, layers)
        self.target = int(target)
        self.composite = composite or DEFAULT_COMPOSITE
        self.outputs: dict[str, torch.Tensor] = {}
        self.batch_size = batch_size
        self.cut = True  # start the graph at the first requested layer (see _hook); off after a fallback
        self._stack = ExitStack()

    def __enter__(self) -> RelevanceScorer:
        from vizkit.project.attribute.inputs import guarded
        from vizkit.project.attribute.lrp import make_composite

        model = self.model
        try:
            self._stack.enter_context(guarded(model, inplace_off=True))
            hooks = self._stack.enter_context(Hooks())
            for name, module in self.modules.items():
                hooks.forward(module, self._hook(name))
            self._stack.enter_context(make_composite(self.composite, model).context(model))
        except BaseException:
            self._stack.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    def _hook(self, name: str) -> Any:
        def hook(module: nn.Module, inputs: tuple[Any, ...], output: Any) -> torch.Tensor | None:
            if name in self.outputs:  # a module called twice per forward counts at its first call, as in the scan
                return None
            if not isinstance(output, torch.Tensor):
                raise ModelError(f"layer '{name}' returns {type(output).__name__}, not a tensor; pick a submodule")
            if self.cut and not self.outputs:
                # The first requested layer met: the graph starts here. Nothing above needs it (the relevance at
                # a layer depends only on the rules after it), so the forward up to here records nothing and
                # zennit's hooks there stay idle (they act on inputs with a grad_fn, hence the clone).
                leaf = output.detach().requires_grad_(True)
                self.outputs[name] = leaf
                return leaf.clone()
            self.outputs[name] = output
            return None

        return hook

    def run(self, model: nn.Module, x: torch.Tensor) -> dict[str, Reduced]:
        self.outputs = {}
        n = x.shape[0]
        self.batch_size = max(self.batch_size, n)
        if n < self.batch_size:
            x = torch.cat([x, x[:1].expand(self.batch_size - n, *x.shape[1:])])
        with torch.enable_grad():
            logits = model(x.detach() if self.cut else x.detach().clone().requires_grad_(True))
            if self.cut and not all(t.requires_grad for t in self.outputs.values()):
                # a requested layer off the first one's path (a parallel branch): the full graph, as zennit-crp
                self.cut, self.outputs = False, {}
                logits = model(x.detach().clone().requires_grad_(True))
            if not isinstance(logits, torch.Tensor) or logits.dim() != 2:
                raise ModelError("relevance mining needs a classifier returning (N, classes) scores")
            if not 0 <= self.target < logits.shape[1]:
                raise UserInputError(f"--class {self.target} does not exist: the model has {logits.shape[1]} classes")
            missing = [name for name in self.modules if name not in self.outputs]
            if missing:
                raise ModelError(f"layer(s) {', '.join(missing)} did not run in the forward pass; pick layers the "
                                 "model calls (see 'vizkit layers')")
            score = logits[:, self.target]
            names = list(self.modules)
            grads = torch.autograd.grad(score, [self.outputs[n] for n in names], score.detach(), allow_unused=True)
        self.outputs = {}
        out = {}
        for name, grad in zip(names, grads, strict=True):
            if grad is None:
                raise ModelError(f"layer '{name}' gave no output the class score depends on; pick a layer on the "
                                 "path to the output")
            out[name] = relevance_reduce(name, grad[:n])
        return out


@dataclass(frozen=True)
class RelevanceScoring:
    """The ``scorer`` factory ``scan_batches`` takes: relevance for class ``target`` under ``composite``."""

    target: int
    composite: str | None = None
    batch_size: int = 0
    needs_grad: ClassVar[bool] = True

    def __call__(self, model: nn.Module, layers: Sequence[str]) -> RelevanceScorer:
        return RelevanceScorer(model, layers, self.target, self.composite, self.batch_size)


def parse_class(spec: str | int | None, class_names: Sequence[str] | None, n_classes: int) -> int:
    """``--class C``: an index or a class name (as ``--target`` of gradcam) -> the class index; a missing or unknown
    class is one line that lists a few of the model's classes and their count."""
    from vizkit.project.targets import parse_targets

    if spec is None or str(spec).strip() == "":
        raise UserInputError("--rank relevance needs --class C (a class index or name of the model)")
    text = str(spec).strip()
    if text.lower() == "auto":
        raise UserInputError("--class auto: relevance mining ranks every image for one class; give its index or name")
    try:
        (index,) = parse_targets([text], class_names, n_classes)
    except UserInputError as err:
        raise UserInputError(f"{str(err).rstrip('.')}. {_classes_hint(class_names, n_classes)}") from None
    assert index is not None
    return index


def _classes_hint(class_names: Sequence[str] | None, n_classes: int) -> str:
    if not class_names:
        return f"The model has {n_classes} classes without names: give an index 0-{n_classes - 1}."
    shown = ", ".join(repr(c) for c in list(class_names)[:SHOWN_CLASSES])
    more = ", ..." if len(class_names) > SHOWN_CLASSES else ""
    return f"The model's {len(class_names)} classes: {shown}{more} (or an index 0-{n_classes - 1})."
