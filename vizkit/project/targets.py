"""Which class scores to explain: ``--target auto|INDEX|CLASS-NAME`` turned into class indices.

``parse_targets`` checks the specs once, before any image is processed (a bad target is a usage error, exit 2);
``resolve_targets`` fills ``auto`` (None) with each image's top-1 class after the forward pass.

In Python a target may also be a function ``f(logits) -> (N,)`` scores, one per image: a multi-label sum, a
regression head, a region of a segmentation output. ``target_objectives`` turns a batch's targets into the
differentiable scores that attribution methods back-propagate; a class index k is the same as ``lambda z: z[:, k]``.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from vizkit.errors import UserInputError, close_matches

AUTO = "auto"
TargetFn = Callable[[torch.Tensor], torch.Tensor]
Target = int | None | TargetFn


def parse_targets(specs: Sequence[str], class_names: Sequence[str] | None, num_classes: int) -> list[int | None]:
    """Turn target specs into class indices; ``None`` stands for ``auto`` (the image's top predicted class).

    A spec is ``auto``, a class index (``0 <= i < num_classes``) or a class name, matched case-insensitively.
    No specs means ``["auto"]``. Where names differ only in case (ImageNet: "Cardigan" the corgi, "cardigan" the
    sweater), the exact spelling picks one. Unknown names (with close matches suggested), names still ambiguous,
    out-of-range indices and names without class names raise ``UserInputError``.
    """
    if num_classes < 1:
        raise UserInputError(f"the model has {num_classes} outputs; Grad-CAM needs class scores")
    parsed: list[int | None] = []
    for raw in specs or [AUTO]:
        spec = str(raw).strip()
        if spec.lower() == AUTO:
            parsed.append(None)
        elif spec.lstrip("+-").isdigit():
            parsed.append(_index(int(spec), spec, num_classes))
        else:
            parsed.append(_by_name(spec, class_names))
    return parsed


def _index(index: int, spec: str, num_classes: int) -> int:
    if not 0 <= index < num_classes:
        raise UserInputError(f"target {spec} does not exist: the model has {num_classes} classes "
                             f"(indices 0 to {num_classes - 1})")
    return index


def _by_name(spec: str, class_names: Sequence[str] | None) -> int:
    if not class_names:
        raise UserInputError(f"target '{spec}': this model has no class names; give a class index or 'auto'")
    folded = spec.casefold()
    hits = [i for i, name in enumerate(class_names) if name.casefold() == folded]
    if len(hits) > 1:  # ImageNet has "Cardigan" (a corgi) and "cardigan" (a sweater): the exact spelling decides
        hits = [i for i in hits if class_names[i] == spec] or hits
    if len(hits) > 1:
        raise UserInputError(f"target '{spec}' names {len(hits)} classes ({', '.join(map(str, hits))}); "
                             "give the index instead")
    if not hits:
        suggestion = close_matches(spec, list(class_names))
        raise UserInputError(f"unknown class '{spec}'.{suggestion} The model has {class_list(class_names)}; give "
                             f"a class name or an index 0-{len(class_names) - 1}.")
    return hits[0]


def class_list(class_names: Sequence[str], shown: int = 5) -> str:
    """'6 classes: circle, square, ...': the count and the first few names, for messages."""
    names = ", ".join(class_names[:shown]) + (", ..." if len(class_names) > shown else "")
    return f"{len(class_names)} classes: {names}"


def resolve_targets(targets: Sequence[Sequence[int | None]] | None, logits: torch.Tensor) -> torch.Tensor:
    """(N, T) long tensor of class indices: ``None`` entries (or ``targets=None``) become each image's top-1.

    Every image needs the same number of targets; indices must lie within the logits' classes.
    """
    n, k = logits.shape
    if targets is None:
        targets = [[None]] * n
    if len(targets) != n:
        raise UserInputError(f"got targets for {len(targets)} images but {n} images")
    counts = {len(t) for t in targets}
    if len(counts) != 1 or 0 in counts:
        raise UserInputError("every image needs the same, nonzero number of targets "
                             f"(got {sorted(len(t) for t in targets)})")
    top1 = logits.detach().argmax(dim=1).tolist()
    rows = []
    for i, row in enumerate(targets):
        rows.append([top1[i] if t is None else _index(int(t), str(t), k) for t in row])
    return torch.tensor(rows, dtype=torch.long, device=logits.device)


def target_objectives(targets: Sequence[Sequence[Target]] | TargetFn | None,
                      logits: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """(index, objectives): index (N, T) long with each image's class (-1 where the target is a function), and T
    differentiable (N,) score tensors to back-propagate. ``targets``: per image a list of class indices, ``None``
    (top-1) or functions ``f(logits) -> (N,)``; a single function stands for one target of every image."""
    n = logits.shape[0]
    if callable(targets):
        targets = [[targets]] * n
    rows = [list(row) for row in targets] if targets is not None else None
    plain = None if rows is None else [[None if callable(t) else t for t in row] for row in rows]
    index = resolve_targets(plain, logits)
    rows = rows or [[None]] * n
    objectives = []
    for t in range(index.shape[1]):
        score = logits.gather(1, index[:, t : t + 1].clone()).squeeze(1)
        functions: dict[int, TargetFn] = {}
        for row in rows:
            item = row[t]
            if callable(item):
                functions[id(item)] = item
        for fn in functions.values():
            values = _call_target(fn, logits)
            picked = torch.tensor([row[t] is fn for row in rows], device=logits.device)
            score = torch.where(picked, values, score)
        objectives.append(score)
    index[torch.tensor([[callable(t) for t in row] for row in rows], device=index.device)] = -1
    return index, objectives


def _call_target(fn: TargetFn, logits: torch.Tensor) -> torch.Tensor:
    values = fn(logits)
    if not isinstance(values, torch.Tensor) or tuple(values.shape) != (logits.shape[0],):
        shape = tuple(values.shape) if isinstance(values, torch.Tensor) else type(values).__name__
        raise UserInputError(f"a target function must return one score per image, shape ({logits.shape[0]},); "
                             f"got {shape}")
    return values.to(logits.dtype)


__all__ = ["AUTO", "Target", "TargetFn", "parse_targets", "resolve_targets", "target_objectives"]
