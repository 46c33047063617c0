"""``labnet``: the shortcut lab's small max-pool CNN, and the trained weights vizkit ships for it.

Architecture (64x64 RGB in, one output per lab class), 25,093 parameters at 5 classes::

    features: conv1 3->8, bn1, relu1, pool1 (64 -> 32); conv2 8->16, bn2, relu2, pool2 (-> 16);
              conv3 16->32, bn3, relu3, pool3 (-> 8); conv4 32->64, bn4, relu4, pool4 (-> 4)
    avgpool (global) -> flatten -> classifier.fc (64 -> classes)

All convolutions are 3x3 with padding 1. Four max-pools give the deconvnet switches that depend on the image; the
receptive field of a conv4 unit is 38 px, so one unit sees a whole shape, or the mark and its surroundings.

Shipped weights (package data in ``vizkit/lab/weights``, float16 on disk, loaded into float32):

- ``labnet.pt``: trained by ``vizkit lab train`` on ``vizkit lab make`` with the defaults (seed 0, the mark on
  ``star``); the default of ``load_model("labnet")``;
- ``epochs/epoch_01.pt`` ... : the same run after every epoch (``labnet_checkpoints()``); the last equals
  ``labnet.pt``;
- ``labnet_clean.pt``: the control, the same recipe on ``vizkit lab make --no-mark`` (``weights="clean"``).

This module registers ``labnet`` in the zoo (``vizkit.load.registry``): ``load_model("labnet")`` imports it by
name, so ``vizkit.load`` never imports ``vizkit.lab``.
"""
from __future__ import annotations

import re
from collections import OrderedDict
from pathlib import Path

from torch import nn

from vizkit.load.preprocessing import Preprocessing
from vizkit.load.registry import ZooWeights, register_model

__all__ = [
    "LAB_CLASSES",
    "LabNet",
    "lab_class_names",
    "labnet",
    "labnet_checkpoints",
    "labnet_preprocessing",
    "labnet_weights",
    "labnet_zoo_weights",
    "resolve_labnet_weights",
]

#: The lab's classes in label order (folder names under train/, val/, test/).
LAB_CLASSES: tuple[str, ...] = ("circle", "square", "triangle", "cross", "star")
IMAGE_SIZE = 64
WIDTHS = (8, 16, 32, 64)
_WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
_EPOCH_NAME = re.compile(r"^epoch_(\d+)\.pt$")


class LabNet(nn.Sequential):
    """Four conv-bn-relu-maxpool blocks, global average pooling and one linear classifier (module docstring)."""

    def __init__(self, num_classes: int = len(LAB_CLASSES)) -> None:
        blocks: list[tuple[str, nn.Module]] = []
        cin = 3
        for i, cout in enumerate(WIDTHS, start=1):
            blocks += [
                (f"conv{i}", nn.Conv2d(cin, cout, kernel_size=3, padding=1)),
                (f"bn{i}", nn.BatchNorm2d(cout)),
                (f"relu{i}", nn.ReLU()),
                (f"pool{i}", nn.MaxPool2d(2, 2)),
            ]
            cin = cout
        super().__init__(OrderedDict([
            ("features", nn.Sequential(OrderedDict(blocks))),
            ("avgpool", nn.AdaptiveAvgPool2d(1)),
            ("flatten", nn.Flatten(1)),
            ("classifier", nn.Sequential(OrderedDict([("fc", nn.Linear(cin, num_classes))]))),
        ]))


def labnet_preprocessing() -> Preprocessing:
    """64x64 RGB scaled to [-1, 1]: lab images pass through unchanged apart from the scaling."""
    return Preprocessing(IMAGE_SIZE, IMAGE_SIZE, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), "bilinear")


def lab_class_names(model: nn.Module) -> list[str] | None:
    """The lab's class names when ``model`` has one output per lab class, else None."""
    params = list(model.parameters())
    return list(LAB_CLASSES) if params and params[-1].shape[0] == len(LAB_CLASSES) else None


def labnet_zoo_weights(weights: str | None) -> ZooWeights:
    """The zoo's weights resolver: the shipped keywords (default, "clean", "epoch_N") name a shipped, trained file
    checked against its sha256; anything else ("none", a file of one's own) is taken as given."""
    resolved = resolve_labnet_weights(weights)
    if resolved == weights:  # a retrained lab/labnet/epoch_01.pt is not the shipped one
        return ZooWeights(weights)
    return ZooWeights(resolved, shipped=True, known_sha256=shipped_sha256())


@register_model(preprocessing=labnet_preprocessing(), class_names=lab_class_names, weights=labnet_zoo_weights)
def labnet(num_classes: int = len(LAB_CLASSES)) -> LabNet:
    return LabNet(num_classes=num_classes)


def labnet_weights(which: str = "final") -> Path:
    """Path of a shipped weights file: ``"final"`` (labnet.pt), ``"clean"`` (the control) or ``"epoch_N"``."""
    key = which.strip().lower()
    if key in ("final", "default"):
        path = _WEIGHTS_DIR / "labnet.pt"
    elif key == "clean":
        path = _WEIGHTS_DIR / "labnet_clean.pt"
    else:
        m = re.fullmatch(r"epoch_?(\d+)", key)
        if m is None:
            raise ValueError(f"unknown labnet weights {which!r}: use 'final', 'clean' or 'epoch_N'")
        path = _WEIGHTS_DIR / "epochs" / f"epoch_{int(m.group(1)):02d}.pt"
    if not path.is_file():
        raise FileNotFoundError(f"labnet weights {which!r} are not shipped in this installation ({path})")
    return path


def labnet_checkpoints() -> list[Path]:
    """The shipped per-epoch checkpoints of labnet, in epoch order (``epoch_01.pt``, ``epoch_02.pt``, ...)."""
    folder = _WEIGHTS_DIR / "epochs"
    found = [(int(m.group(1)), p) for p in folder.glob("epoch_*.pt") if (m := _EPOCH_NAME.match(p.name))]
    return [p for _, p in sorted(found)]


def shipped_sha256() -> dict[str, str]:
    """File name -> sha256 of every weights file shipped with vizkit (``weights/SHA256SUMS``, written when they were
    trained), so that a shipped file that was altered on disk reads "does NOT match its published checksum"."""
    sums = _WEIGHTS_DIR / "SHA256SUMS"
    if not sums.is_file():
        return {}
    rows = (line.split() for line in sums.read_text().splitlines() if line.strip())
    return {Path(name).name: digest for digest, name in rows}


def resolve_labnet_weights(weights: str | None) -> str | None:
    """Map ``load_model("labnet", weights)`` keywords to a shipped file; anything else comes back unchanged.

    ``None``/``"DEFAULT"`` -> labnet.pt, ``"clean"`` -> labnet_clean.pt, ``"epoch_N"`` -> that checkpoint.
    """
    key = "final" if weights is None or weights.strip().upper() == "DEFAULT" else weights.strip().lower()
    if key not in ("final", "clean") and not re.fullmatch(r"epoch_?\d+", key):
        return weights
    try:
        return str(labnet_weights(key))
    except FileNotFoundError as e:
        from vizkit.errors import ModelError

        shipped = [p.stem for p in labnet_checkpoints()]
        raise ModelError(f"{e}; shipped: final, clean, {', '.join(shipped) or 'no checkpoints'}") from e
