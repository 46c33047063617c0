"""The verdict rule: one suspicion per cluster from all of its evidence, none of which can veto alone.

``score = sigmoid(sum_f w_f * (x_f - mean_f) / scale_f + bias)`` over ``FEATURES`` (``evidence.Evidence``):
a logistic regression, so every figure adds its weight of evidence (a redundant shortcut's low deletion is
outweighed by its transplant flip; an object part's high deletion by its low consistency and its mean-patch
transplant that flips nothing). A class's suspicion is its best cluster's score; it is **flagged** when that is
``>= flag``. The weights, the standardisation, ``flag`` and the merge thresholds are fitted by code on half of a
family of labs (``vizkit.lab.fit``), once per attribution method (the figures' scale depends on the maps that
chose the region), and stored in ``thresholds.json`` beside this module with what they were fitted on and which
method is the default; nothing here is set by hand.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

from vizkit.errors import UserInputError
from vizkit.project.shortcuts.evidence import Evidence

FEATURES = ("concentration", "consistency", "deletion", "gain_own", "flip_own", "gain_mean", "flip_mean")
THRESHOLDS_JSON = Path(__file__).resolve().parent / "thresholds.json"


@dataclass
class Thresholds:
    """Everything the verdict needs (module docstring); ``fitted`` says on what."""

    method: str = "gradxinput"
    merge_iou: float = 0.5
    merge_similarity: float = 0.5
    mean: dict[str, float] = field(default_factory=lambda: dict.fromkeys(FEATURES, 0.0))
    scale: dict[str, float] = field(default_factory=lambda: dict.fromkeys(FEATURES, 1.0))
    weights: dict[str, float] = field(default_factory=lambda: dict.fromkeys(FEATURES, 0.0))
    bias: float = 0.0
    flag: float = 0.5
    fitted: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return asdict(self)

    def write(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_json(), indent=1, sort_keys=True) + "\n")


def write_fitted(fitted: dict[str, Thresholds], path: str | Path = THRESHOLDS_JSON) -> None:
    """Thresholds fitted per method, the first one the default (the form ``load_thresholds`` reads)."""
    content = {"default": next(iter(fitted)), "methods": {m: th.to_json() for m, th in fitted.items()}}
    Path(path).write_text(json.dumps(content, indent=1, sort_keys=True) + "\n")


def load_thresholds(path: str | Path | None = None, method: str | None = None) -> Thresholds:
    """The fitted thresholds (the shipped ``thresholds.json`` by default): those fitted for ``method`` where the
    file has them, else its default method's. A file of one ``Thresholds`` (``Thresholds.write``) is used as it is."""
    p = THRESHOLDS_JSON if path is None else Path(path)
    try:
        content = json.loads(p.read_text())
    except (OSError, ValueError) as e:
        raise UserInputError(f"cannot read shortcut thresholds {p}: {e} (fit them with vizkit.lab.fit)") from e
    if "methods" in content:
        content = content["methods"].get(method) or content["methods"][content["default"]]
    known = set(Thresholds.__dataclass_fields__)
    return Thresholds(**{k: v for k, v in content.items() if k in known})


def score(evidence: Evidence, th: Thresholds) -> float:
    """The cluster's suspicion in (0, 1) (module docstring)."""
    values = evidence.to_dict()
    z = th.bias + sum(th.weights[f] * (values[f] - th.mean[f]) / (th.scale[f] or 1.0) for f in FEATURES)
    return 1.0 / (1.0 + math.exp(-max(min(z, 50.0), -50.0)))


__all__ = ["FEATURES", "THRESHOLDS_JSON", "Thresholds", "load_thresholds", "score", "write_fitted"]
