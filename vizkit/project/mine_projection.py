"""Pass 2 of ``vizkit mine``: project each rendered unit's top-K activations with the deconvnet, batched.

Every (unit, image) pair is one batch element. Elements are projected with the same rules as ``vizkit deconv``
(``forward_capture`` under ``DeconvRules``), so a projection here equals ``deconv`` on that image alone, seeded with
the same unit at the same position:

- where the model is spatially local up to the layer and the unit's receptive-field crop covers at most
  ``CROP_MAX_AREA`` of the image, the element is its crop (aligned to the layer's stride, as ``project_cropped``
  does); crops of one size form a batch: one forward, one backward of the sum of each element's own unit;
- otherwise the distinct images are forwarded once in batches, and the backward runs in rounds over that graph:
  round r seeds, in every image, its r-th requested unit (images are independent in eval mode, so the sum's
  gradient is each element's own projection).

``cone=True`` (the default) runs the backward under ``ConeConv``: each convolution's input gradient computed only on
the box where the signal is nonzero, the exact adjoint with less arithmetic (about 0.6 of a full backward for a
VGG16 conv5_3 unit). With it, an image that is forwarded whole anyway also serves its crop-sized requests: a cone
backward over the shared forward costs less than a forward and a backward over each crop. Projections are returned
cropped to the unit's receptive-field box (the whole image when the receptive field is unknown).
"""
from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from itertools import groupby
from typing import TYPE_CHECKING, Protocol

import numpy as np
import torch
from torch import nn

from vizkit.capture.probe import model_device
from vizkit.capture.receptive_field import ReceptiveField
from vizkit.capture.state import preserve_model_state
from vizkit.errors import UserInputError
from vizkit.load.preprocessing import Preprocessing, deprocess
from vizkit.project.cone import ConeConv
from vizkit.project.cone_chain import chain_shapes, project_boxed, record
from vizkit.project.deconv import Unit, _as_grid, _crop_box, _cropped_units, analyse_receptive_fields, forward_capture

if TYPE_CHECKING:
    from vizkit.scan.topk import LayerTopK, MineResult

Box = tuple[int, int, int, int]


@dataclass
class TopEntry:
    """One of a unit's top-K images: where it fired, how strongly, and its projection cropped to ``box``.

    box: (y0, y1, x0, x1) half-open receptive field in input pixels, clipped to the image; projection: (C, y1-y0,
    x1-x0) float32, raw deconvnet output seeded with the unit's activation; patch: (y1-y0, x1-x0, 3) uint8, the
    preprocessed input under the box, de-normalised."""

    image_index: int
    path: str
    value: float
    position: tuple[int, int]
    box: Box
    projection: np.ndarray
    patch: np.ndarray


@dataclass
class UnitTopProjections:
    layer: str
    channel: int
    entries: list[TopEntry]


@dataclass(frozen=True)
class Request:
    """One batch element: project ``channel`` at ``position`` in image ``image``."""

    channel: int
    image: int
    position: tuple[int, int]


class ImageSource(Protocol):
    """What pass 2 needs from a dataset: ``source[i]`` -> (x (C, H, W) or None, i, label, error message)."""

    def __getitem__(self, i: int) -> tuple[torch.Tensor | None, int, int, str]: ...


def project_requests(model: nn.Module, images: dict[int, torch.Tensor], layer: str, requests: Sequence[Request], *,
                     receptive_field: ReceptiveField | None = None, batch_size: int = 16, cone: bool = True,
                     ) -> list[tuple[np.ndarray, Box]]:
    """Projections of ``requests`` on ``images`` (index -> (C, H, W) on the model's device), in request order, each
    cropped to its receptive-field box. ``receptive_field``: the layer's ``ReceptiveField`` or None (then no crop
    batches and the full image as box). The model's flags are restored on return and no hook is left behind."""
    if not requests:
        return []
    if batch_size < 1:
        raise UserInputError(f"batch size must be at least 1, got {batch_size}")
    _, height, width = next(iter(images.values())).shape
    units = [Unit(r.channel, r.position) for r in requests]
    on_crop = _cropped_units(receptive_field, "max", units, height, width)
    if cone and receptive_field is not None:
        on_crop = _share_forwards(requests, on_crop, receptive_field, height, width)
    boxes = [_output_box(receptive_field, r.position, height, width) for r in requests]
    out: list[np.ndarray | None] = [None] * len(requests)
    first = next(iter(images.values()))[None]
    chain = chain_shapes(model, first, layer) if cone else None
    with preserve_model_state(model):
        if chain is not None:  # every request on its cone alone, from one shared forward per image
            for i, (grad, where) in _project_chain(model, images, layer, requests, chain, batch_size):
                out[i] = _place(grad, where, boxes[i])
            return [(p, b) for p, b in zip(out, boxes, strict=True) if p is not None]
        crop_idx = [i for i, flag in enumerate(on_crop) if flag]
        full_idx = [i for i, flag in enumerate(on_crop) if not flag]
        for i, grad_box in _project_crops(model, images, layer, requests, crop_idx, receptive_field, batch_size, cone):
            out[i] = _cut(grad_box[0], grad_box[1], boxes[i])
        for i, grad in _project_full(model, images, layer, requests, full_idx, batch_size, cone):
            out[i] = _cut(grad, (0, height, 0, width), boxes[i])
    return [(p, b) for p, b in zip(out, boxes, strict=True) if p is not None]


def _share_forwards(requests: Sequence[Request], on_crop: list[bool], rf: ReceptiveField, height: int,
                    width: int) -> list[bool]:
    """With the cone backward, an image forwarded whole anyway serves all its requests: a cone backward over that
    shared forward costs less than a forward and a backward over the request's crop. An image whose requests all
    fit on crops stays on crops while their crops together cover less than one image."""
    area: dict[int, int] = {}
    whole: set[int] = set()
    for r, flag in zip(requests, on_crop, strict=True):
        if not flag:
            whole.add(r.image)
            continue
        y0, y1, x0, x1 = _crop_box(rf, Unit(r.channel, r.position), height, width)
        area[r.image] = area.get(r.image, 0) + (y1 - y0) * (x1 - x0)
    whole |= {im for im, a in area.items() if a > height * width}
    return [flag and r.image not in whole for r, flag in zip(requests, on_crop, strict=True)]


def _output_box(rf: ReceptiveField | None, position: tuple[int, int], height: int, width: int) -> Box:
    if rf is None:
        return (0, height, 0, width)
    y0, y1, x0, x1 = rf.box(*position, height, width)
    return int(y0), int(y1), int(x0), int(x1)


def _project_chain(model: nn.Module, images: dict[int, torch.Tensor], layer: str, requests: Sequence[Request],
                   chain: tuple[list[tuple[str, nn.Module]], dict[str, torch.Size]], batch_size: int,
                   ) -> Iterator[tuple[int, tuple[torch.Tensor, Box]]]:
    """Yield (request index, (projection on its box, box)): distinct images forwarded in batches without autograd,
    then each request walked down its cone (``vizkit.project.cone_chain``)."""
    leaves, shapes = chain
    per_image: dict[int, list[int]] = {}
    for i, r in enumerate(requests):
        per_image.setdefault(r.image, []).append(i)
    order = list(per_image)
    for start in range(0, len(order), batch_size):
        batch = order[start : start + batch_size]
        output, switches = record(model, torch.stack([images[im] for im in batch]), layer)
        for row, im in enumerate(batch):
            for i in per_image[im]:
                yield i, project_boxed(leaves, shapes, switches, row, requests[i].channel, requests[i].position,
                                       output)


def _place(grad: torch.Tensor, where: Box, box: Box) -> np.ndarray:
    """``grad`` covers ``where`` of the image (zero elsewhere); return the part under ``box`` as float32 numpy."""
    part = np.zeros((grad.shape[0], box[1] - box[0], box[3] - box[2]), np.float32)
    y0, y1 = max(where[0], box[0]), min(where[1], box[1])
    x0, x1 = max(where[2], box[2]), min(where[3], box[3])
    if y0 < y1 and x0 < x1:
        part[:, y0 - box[0] : y1 - box[0], x0 - box[2] : x1 - box[2]] = (
            grad[:, y0 - where[0] : y1 - where[0], x0 - where[2] : x1 - where[2]].detach().to("cpu", torch.float32))
    return part


def _cut(grad: torch.Tensor, where: Box, box: Box) -> np.ndarray:
    """``grad`` covers ``where`` of the image; return the part under ``box`` as float32 numpy."""
    y0, _, x0, _ = where
    part = grad[:, box[0] - y0 : box[1] - y0, box[2] - x0 : box[3] - x0]
    return part.detach().to("cpu", torch.float32).numpy().copy()


def _backward(anchor: torch.Tensor, leaf: torch.Tensor, seeds: torch.Tensor, retain: bool) -> torch.Tensor:
    (grad,) = torch.autograd.grad(anchor, leaf, seeds.view_as(anchor), retain_graph=retain)
    return grad


def _capture(model: nn.Module, x: torch.Tensor, layer: str, cone: bool) -> tuple[torch.Tensor, torch.Tensor]:
    if cone:
        with ConeConv():
            cap = forward_capture(model, x, [layer], stop=True)
    else:
        cap = forward_capture(model, x, [layer], stop=True)
    return cap.outputs[layer], cap.x


def _project_crops(model: nn.Module, images: dict[int, torch.Tensor], layer: str, requests: Sequence[Request],
                   idx: Sequence[int], rf: ReceptiveField | None, batch_size: int, cone: bool,
                   ) -> Iterator[tuple[int, tuple[torch.Tensor, Box]]]:
    """Yield (request index, (projection of the crop, crop box)) for elements computed on their crop."""
    if not idx or rf is None:
        return
    _, height, width = next(iter(images.values())).shape
    crops = {i: _crop_box(rf, Unit(requests[i].channel, requests[i].position), height, width) for i in idx}
    groups: dict[tuple[int, int], list[int]] = {}
    for i in idx:
        y0, y1, x0, x1 = crops[i]
        groups.setdefault((y1 - y0, x1 - x0), []).append(i)
    sy, sx = rf.stride
    for members in groups.values():
        for start in range(0, len(members), batch_size):
            chunk = members[start : start + batch_size]
            x = torch.stack([_window(images[requests[i].image], crops[i]) for i in chunk])
            anchor, leaf = _capture(model, x, layer, cone)
            grid = _as_grid(anchor.detach())
            seeds = torch.zeros_like(grid)
            for row, i in enumerate(chunk):
                y, xx = requests[i].position
                at = (row, requests[i].channel, y - crops[i][0] // sy, xx - crops[i][2] // sx)
                seeds[at] = grid[at]
            grad = _backward(anchor, leaf, seeds, False)
            for row, i in enumerate(chunk):
                yield i, (grad[row], crops[i])


def _window(image: torch.Tensor, box: Box) -> torch.Tensor:
    return image[:, box[0] : box[1], box[2] : box[3]]


def _project_full(model: nn.Module, images: dict[int, torch.Tensor], layer: str, requests: Sequence[Request],
                  idx: Sequence[int], batch_size: int, cone: bool) -> Iterator[tuple[int, torch.Tensor]]:
    """Yield (request index, full-image projection): each distinct image forwarded once, backward in rounds."""
    per_image: dict[int, list[int]] = {}
    for i in idx:
        per_image.setdefault(requests[i].image, []).append(i)
    # Only images with the same number of requests share a batch: every round's backward runs over the whole batch,
    # so an element with fewer requests would pay for rounds that seed nothing in it (measured: mixing them made
    # pass 2 slower than Captum's forward + backward per projection).
    order = sorted(per_image, key=lambda im: (-len(per_image[im]), im))
    batches: list[list[int]] = []
    for _, run in groupby(order, key=lambda im: len(per_image[im])):
        same = list(run)
        batches += [same[a : a + batch_size] for a in range(0, len(same), batch_size)]
    for batch in batches:
        anchor, leaf = _capture(model, torch.stack([images[im] for im in batch]), layer, cone)
        grid = _as_grid(anchor.detach())
        rounds = max(len(per_image[im]) for im in batch)
        for r in range(rounds):
            seeds = torch.zeros_like(grid)
            seeded = []
            for row, im in enumerate(batch):
                if r < len(per_image[im]):
                    i = per_image[im][r]
                    at = (row, requests[i].channel, *requests[i].position)
                    seeds[at] = grid[at]
                    seeded.append((row, i))
            grad = _backward(anchor, leaf, seeds, r < rounds - 1)
            for row, i in seeded:
                yield i, grad[row]


def select_units(result: MineResult, layer: str, spec: str | None = None) -> list[int]:
    """Channels of ``layer`` to render: ``all``; ``top:N``, the N strongest by mean activation (ties to the smaller
    channel); or channels, ``5`` or ``3,7,12`` (in that order: a bare list always names channels). Units with no
    top-K entry are left out of ``all`` and ``top:N``."""
    spec = (spec or DEFAULT_UNITS).strip()
    state = _layer_state(result, layer)
    n_channels = len(state.mean)
    filled = np.asarray(state.image_index)[:, 0] >= 0
    if spec == "all":
        return [c for c in range(n_channels) if filled[c]]
    if spec.startswith("top:"):
        count = spec[4:].strip()
        if not count.isdigit() or int(count) < 1:
            raise UserInputError(f"--units {spec!r}: top:N needs a whole number N of at least 1, like top:16")
        order = np.argsort(-np.asarray(state.mean, dtype=np.float64), kind="stable")
        return [int(c) for c in order if filled[c]][: int(count)]
    try:
        channels = [int(part) for part in spec.split(",") if part.strip()]
    except ValueError:
        raise UserInputError(f"--units {spec!r}: use all, top:N or channels like 5 or 3,7,12") from None
    bad = [c for c in channels if not 0 <= c < n_channels]
    if bad or not channels:
        raise UserInputError(f"--units {spec!r}: layer '{layer}' has channels 0..{n_channels - 1}")
    return list(dict.fromkeys(channels))


# 16 units per layer: VGG16's five default mine layers: 80 units x 9 projections; the early layers run on small crops
# and the deep ones cost about one backward each, a few minutes of CPU time in all; ``all`` is one option away.
DEFAULT_UNITS = "top:16"
MAX_IMAGES = 256  # distinct images of one chunk of units held on the device at once


def _layer_state(result: MineResult, layer: str) -> LayerTopK:
    layers = result.layers
    if layer not in layers:
        raise UserInputError(f"layer '{layer}' was not scanned; scanned layers: {', '.join(layers)}")
    return layers[layer]


def project_units(model: nn.Module, result: MineResult, dataset: ImageSource, layer: str, channels: Sequence[int], *,
                  prep: Preprocessing | None = None, receptive_field: ReceptiveField | None = None,
                  batch_size: int = 16,
                  device: torch.device | str | None = None, cone: bool = True,
                  progress: Callable[[int, int], None] | None = None) -> list[UnitTopProjections]:
    """Re-read each selected unit's top-K images from ``dataset`` and project them (see the module docstring).

    ``result``: the scan's ``MineResult``; ``prep``: the preprocessing used (for the patches; default
    ``dataset.prep``); ``receptive_field``: the layer's field, analysed from the model when not given."""
    state = _layer_state(result, layer)
    prep = prep or getattr(dataset, "prep", None)
    if prep is None:
        raise UserInputError("project_units needs the preprocessing (prep=) to de-normalise the image patches")
    device = torch.device(device) if device is not None else model_device(model)
    paths = result.paths
    k = state.image_index.shape[1]
    units = {ch: UnitTopProjections(layer, ch, []) for ch in channels}
    step = max(1, MAX_IMAGES // max(k, 1))  # units per chunk: at most MAX_IMAGES images held on the device
    for start in range(0, len(channels), step):
        chunk = channels[start : start + step]
        wanted = [(ch, r) for ch in chunk for r in range(k) if state.image_index[ch, r] >= 0]
        images = _read_images(dataset, sorted({int(state.image_index[ch, r]) for ch, r in wanted}), paths, device)
        requests = [Request(ch, int(state.image_index[ch, r]), _position(state.positions[ch, r])) for ch, r in wanted]
        if receptive_field is None and images:
            shape = (1, *next(iter(images.values())).shape)
            found = analyse_receptive_fields(model, shape).get(layer)
            receptive_field = found if isinstance(found, ReceptiveField) else None
        projected = project_requests(model, images, layer, requests, receptive_field=receptive_field,
                                     batch_size=batch_size, cone=cone)
        for (ch, r), req, (proj, box) in zip(wanted, requests, projected, strict=True):
            patch = deprocess(images[req.image][:, box[0] : box[1], box[2] : box[3]], prep)
            units[ch].entries.append(TopEntry(req.image, str(paths[req.image]), float(state.values[ch, r]),
                                              req.position, box, proj, patch))
        if progress is not None:
            progress(min(start + step, len(channels)), len(channels))
    return [units[ch] for ch in channels]


def _position(p: np.ndarray) -> tuple[int, int]:
    return (int(p[0]), int(p[1]))


def _read_images(dataset: ImageSource, indices: Sequence[int], paths: Sequence[str],
                 device: torch.device) -> dict[int, torch.Tensor]:
    images: dict[int, torch.Tensor] = {}
    for i in indices:
        x, _, _, error = dataset[i]
        if x is None:
            raise UserInputError(f"{paths[i]}: was read in the scan but not for its projection now: {error}")
        images[i] = x.to(device)
    return images
