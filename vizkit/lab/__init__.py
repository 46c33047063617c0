"""The shortcut lab: a dataset with a planted mark (``make_lab``), the small CNN ``labnet`` trained on it
(``train_labnet``, shipped weights: ``labnet_weights``, ``labnet_checkpoints``) and the three numbers that show
the shortcut (``evaluate_lab``)."""
from __future__ import annotations

from vizkit.lab.dataset import LAB_JSON, LabSpec, make_lab, mark_box, paste_mark, read_lab
from vizkit.lab.labnet import LAB_CLASSES, LabNet, labnet, labnet_checkpoints, labnet_preprocessing, labnet_weights

__all__ = [
    "LAB_CLASSES",
    "LAB_JSON",
    "LabNet",
    "LabSpec",
    "labnet",
    "labnet_checkpoints",
    "labnet_preprocessing",
    "labnet_weights",
    "make_lab",
    "mark_box",
    "paste_mark",
    "read_lab",
]
