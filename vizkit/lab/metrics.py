"""The three numbers that show a shortcut as a user meets it.

1. ``val_accuracy``: accuracy on the training distribution, measured on the held-out ``val`` split (drawn like
   ``train``, marked at the same rate; not the images the model was fitted on).
2. The drop: accuracy on the marked class in ``val`` (mostly marked) minus accuracy on its clean ``test`` images.
3. ``flip_rate``: the share of the other classes' test images predicted as the marked class once the mark is
   pasted (``test_marked``), beside ``flip_base``, the same share on the same images without the mark.

For a control lab (``--no-mark``) only the accuracies exist. Any model that takes labnet's input can be scored,
e.g. the control weights on the marked lab: a model that never saw the mark should not flip.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from vizkit.lab.dataset import read_lab

__all__ = ["LabNumbers", "evaluate_lab", "predict"]


@dataclass
class LabNumbers:
    classes: list[str]
    marked_class: str | None
    val_accuracy: float
    test_accuracy: float
    marked_val_accuracy: float | None = None
    marked_test_accuracy: float | None = None
    drop: float | None = None
    flip_rate: float | None = None
    flip_base: float | None = None
    per_class_test_accuracy: dict[str, float] | None = None

    def to_dict(self) -> dict:
        return asdict(self)

    def format(self) -> str:
        lines = [f"accuracy on the training distribution (held-out val split): {self.val_accuracy:.3f}",
                 f"accuracy on the clean test split: {self.test_accuracy:.3f}"]
        if self.marked_class is not None and self.drop is not None:
            lines.append(f"marked class {self.marked_class!r}: {self.marked_val_accuracy:.3f} on val (marked as in "
                         f"training) -> {self.marked_test_accuracy:.3f} on clean test: drop {self.drop:.3f}")
        if self.flip_rate is not None:
            lines.append(f"flip rate: {self.flip_rate:.3f} of the other classes' test images become "
                         f"{self.marked_class!r} with the mark pasted (without it: {self.flip_base:.3f})")
        return "\n".join(lines)


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """Top-1 class of each row of ``x``; the model's training flag is restored afterwards."""
    was_training = model.training
    model.eval()
    try:
        outs = [model(x[i:i + batch_size]).argmax(1) for i in range(0, len(x), batch_size)]
    finally:
        model.train(was_training)
    return torch.cat(outs) if outs else torch.empty(0, dtype=torch.long)


def _accuracy(pred: torch.Tensor, y: torch.Tensor) -> float:
    return float((pred == y).float().mean()) if len(y) else float("nan")


def evaluate_lab(model: nn.Module, lab_dir: str | Path) -> LabNumbers:
    """Score ``model`` (labnet input, the lab's classes in order) on the lab in ``lab_dir``."""
    from vizkit.lab.train import load_split

    lab = read_lab(lab_dir)
    classes = list(lab["classes"])
    xv, yv, _ = load_split(lab_dir, "val", classes)
    xt, yt, _ = load_split(lab_dir, "test", classes)
    pv, pt = predict(model, xv), predict(model, xt)
    per_class = {name: _accuracy(pt[yt == i], yt[yt == i]) for i, name in enumerate(classes)}
    numbers = LabNumbers(classes, lab.get("marked_class"), _accuracy(pv, yv), _accuracy(pt, yt),
                         per_class_test_accuracy=per_class)
    m = lab.get("marked_class_index")
    if m is None:
        return numbers
    numbers.marked_val_accuracy = _accuracy(pv[yv == m], yv[yv == m])
    numbers.marked_test_accuracy = per_class[classes[m]]
    numbers.drop = numbers.marked_val_accuracy - numbers.marked_test_accuracy
    xm, ym, _ = load_split(lab_dir, "test_marked", classes)
    if len(ym):
        pm = predict(model, xm)
        numbers.flip_rate = float((pm == m).float().mean())
        # the same images without the mark: test_marked/<c>/test_marked_<c>_NNNN.png <- test/<c>/test_<c>_NNNN.png
        clean = torch.cat([pt[(yt == int(c))] for c in ym.unique()])
        numbers.flip_base = float((clean == m).float().mean())
    return numbers
