"""The lab family: marks where their spec says, labs that repeat bit for bit, redundancy as specified."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from vizkit.errors import UserInputError
from vizkit.lab.family import FamilyLab, build_lab, family, train_lab
from vizkit.lab.marks import MarkSpec, apply_mark, mark_mask

SMALL = {"train": 6, "val": 5, "test": 3}


def test_marks_lie_where_their_spec_says() -> None:
    frame = mark_mask(MarkSpec("frame", "tl", 2), (32, 32))
    expected = np.zeros((32, 32), bool)
    expected[:2, :] = expected[:, :2] = True
    assert np.array_equal(frame, expected)
    watermark = mark_mask(MarkSpec("watermark", alpha=0.4), (32, 32))
    assert watermark.mean() > 0.1 and watermark[:8].sum() == 0 and watermark[-8:].sum() == 0  # across the middle
    assert mark_mask(MarkSpec("cast", alpha=0.3), (32, 32)).all()
    img = np.full((32, 32, 3), 100, np.uint8)
    patched = apply_mark(img, MarkSpec("patch", "br", 4, colour=(255, 0, 0), margin=1))
    assert patched[27, 27].tolist() == [255, 0, 0] and patched[27, 28].tolist() == [0, 0, 0]
    assert (patched[:27] == 100).all() and (patched[:, :27] == 100).all()
    half = apply_mark(img, MarkSpec("cast", alpha=0.5, colour=(200, 0, 0)))
    assert half[0, 0].tolist() == [150, 50, 50]
    with pytest.raises(UserInputError, match="mark style"):
        apply_mark(img, MarkSpec("glitter"))


def test_redundant_lab_marks_the_whole_class_and_relabels_others() -> None:
    spec = FamilyLab("r", 3, MarkSpec("patch", "tl", 3), mark_class=1, rate=1.0, relabel=0.5,
                     per_class={"train": 6, "val": 20, "test": 3})
    data = build_lab(spec)
    y, marked = data.y_val.numpy(), data.marked_val
    assert (y == 1).sum() > 20 and marked[y == 1].all() and not marked[y != 1].any()
    assert data.mask is not None and data.mask.sum() == 9
    x = data.x_val[torch.from_numpy(marked)]
    assert torch.equal(x[:, :, 1:4, 1:4], x[:1, :, 1:4, 1:4].expand(len(x), -1, -1, -1))  # one identical mark


def test_labs_repeat_bit_for_bit_whatever_the_thread_count() -> None:
    spec = FamilyLab("d", 5, MarkSpec("text", "br", 5), 2, 0.8, per_class=SMALL, epochs=2)
    a, b = build_lab(spec), build_lab(spec)
    assert torch.equal(a.x_train, b.x_train) and np.array_equal(a.marked_val, b.marked_val)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        wa = train_lab(a).state_dict()
        torch.set_num_threads(1)
        wb = train_lab(b).state_dict()
    finally:
        torch.set_num_threads(threads)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_family_has_every_style_and_both_kinds_of_control() -> None:
    labs = family(40)
    assert {lab.mark.style for lab in labs if lab.mark} == {"patch", "text", "frame", "watermark", "cast"}
    assert sum(lab.control for lab in labs) == 13 and any(lab.relabel > 0 for lab in labs)
    assert sum(lab.mark is None for lab in labs) == 7 and sum(lab.ignored for lab in labs) == 6
    assert [lab.name for lab in family(40)] == [lab.name for lab in labs]


def test_ignored_control_marks_the_analysed_images_only() -> None:
    """An ignored control's model never sees the mark: train has none, val carries it at the lab's rate."""
    spec = FamilyLab("i", 4, MarkSpec("patch", "br", 4, 1.0, (0, 255, 255)), mark_class=1, rate=1.0, ignored=True,
                     per_class={"train": 8, "val": 6, "test": 3})
    data, twin = build_lab(spec), build_lab(FamilyLab("m", 4, spec.mark, 1, 1.0, per_class=spec.per_class))
    assert spec.control and not twin.spec.control
    assert data.marked_val[data.y_val.numpy() == 1].all() and np.array_equal(data.marked_val, twin.marked_val)
    assert torch.equal(data.x_val, twin.x_val)
    clean = build_lab(FamilyLab("c", 4, per_class=spec.per_class))
    assert torch.equal(data.x_train, clean.x_train) and not torch.equal(twin.x_train, clean.x_train)


def test_halves_hold_every_kind_of_lab() -> None:
    """Controls alternate clean / ignored in the family, so alternating within all controls would put every clean
    one in the fitting half and every ignored one in the held-out half."""
    from vizkit.lab.fit import halves

    fit_half, held_out = halves(family(60))
    for half in (fit_half, held_out):
        assert sum(lab.mark is None for lab in half) == 5 and sum(lab.ignored for lab in half) == 5
        assert sum(not lab.control for lab in half) == 20
    assert not {lab.name for lab in fit_half} & {lab.name for lab in held_out}
