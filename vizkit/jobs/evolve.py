"""``vizkit evolve`` as a function: ``run_evolve(EvolveConfig(checkpoints=[...], data=...))``; ``evolve(...)``
returns the numbers without writing files.

Zeiler & Fergus Fig. 4 for your own training run. Pass 1, per checkpoint in training order: load the weights, run
the exact dataset scan of ``vizkit mine`` (top-K per unit, K = 1 by default) and read the filter RMS. The units to
follow are then chosen on the last checkpoint (``--units``, as in ``vizkit mine``). Pass 2, per checkpoint: project
each chosen unit's strongest activation over the dataset with the deconvnet (the batched projections of ``vizkit
mine``). A checkpoint that cannot be loaded is skipped with one line and the run goes on (exit 2 at the end).

Images are read and preprocessed once and kept in memory when they fit in ``CACHE_BYTES``; otherwise every
checkpoint streams them from disk again.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from vizkit.capture.receptive_field import ReceptiveField
from vizkit.capture.recorder import resolve_layers
from vizkit.capture.stages import default_layers
from vizkit.errors import UserInputError, VizkitError
from vizkit.jobs.common import Failure, JobReport, ModelJob, resolve_device
from vizkit.load import LoadedModel, deprocess, load_model
from vizkit.load.checkpoints import CheckpointList, list_checkpoints
from vizkit.load.dataset import ImageBatch, ImageDataset, ImageList, image_loader, list_images
from vizkit.project.deconv import analyse_receptive_fields
from vizkit.project.evolution import Cell, EvolveResult, filter_trend, layer_conv, stack_layer
from vizkit.project.mine_projection import Request, project_requests, select_units
from vizkit.project.scan import ScanState, scan_batches
from vizkit.project.topk import MineResult
from vizkit.render.evolve_outputs import write_evolve_outputs
from vizkit.render.info import ReportInfo

log = logging.getLogger("vizkit")

DEFAULT_UNITS = "top:8"  # rows per layer in the Fig. 4 grid: the 8 strongest units (mean activation) at the end
CACHE_BYTES = 1 << 30


@dataclass(kw_only=True)
class EvolveConfig(ModelJob):
    """Options of ``vizkit evolve``. ``checkpoints``: weight files and/or folders of them; ``data``: a folder or
    image-list file as for ``vizkit mine``; ``layers`` None: one per resolution stage; ``units``: ``all``,
    ``top:N``/``N`` (strongest mean activation at the last checkpoint) or ``3,7,12``; ``top_k``: images kept per
    unit and checkpoint (the stability of the top-K set uses them); ``patches``: show the image patch beside each
    projection."""

    checkpoints: Sequence[str | Path]
    data: str | Path
    layers: Sequence[str] | None = None
    units: str = DEFAULT_UNITS
    top_k: int = 1
    patches: bool = False
    batch_size: int = 32
    limit: int | None = None

    def check(self) -> None:
        for name, value in (("--top-k", self.top_k), ("--batch-size", self.batch_size), ("--limit", self.limit)):
            if value is not None and value < 1:
                raise UserInputError(f"{name} must be at least 1, got {value}")


@dataclass
class EvolveReport(JobReport):
    """What ``run_evolve`` did: ``failures`` lists skipped checkpoints and unreadable images."""

    result: EvolveResult | None = None
    timings: dict[str, float] = field(default_factory=dict)


class _Images:
    """The dataset's preprocessed images: in memory when they fit, else streamed from disk for every scan."""

    def __init__(self, images: ImageList, loaded: LoadedModel, batch_size: int) -> None:
        self.images, self.dataset = images, ImageDataset(images, loaded.preprocessing)
        self.batch_size = batch_size
        prep = loaded.preprocessing
        size = len(images.paths) * prep.channels * prep.crop * prep.crop * 4
        self.cached: list[ImageBatch] | None = list(self._stream()) if size <= CACHE_BYTES else None

    def _stream(self) -> torch.utils.data.DataLoader:
        return image_loader(self.dataset, batch_size=self.batch_size, device="cpu")

    def batches(self) -> list[ImageBatch] | torch.utils.data.DataLoader:
        return self.cached if self.cached is not None else self._stream()

    def get(self, i: int, device: torch.device) -> torch.Tensor:
        x, _, _, error = self.dataset[i]
        if x is None:
            raise UserInputError(f"{self.images.paths[i]}: was read in the scan but not now: {error}")
        return x.to(device)


def _scan(loaded: LoadedModel, data: _Images, layers: list[str], k: int) -> MineResult:
    device = next(loaded.model.parameters()).device
    state = ScanState(layers, k, device=device)
    moved = (ImageBatch(b.x.to(device), b.index, b.label, b.skipped) for b in data.batches())
    run = scan_batches(loaded.model, moved, state)
    paths = [str(p) for p in data.images.paths]
    return state.result(paths, labels=data.images.labels, skipped=[(paths[i], why) for i, why in run.skipped])


def _project(loaded: LoadedModel, scan: MineResult, data: _Images, layer: str, units: Sequence[int],
             field_: ReceptiveField | None) -> list[Cell | None]:
    """Each unit's strongest activation at this checkpoint, projected (None where the unit never had an entry)."""
    state = scan.layers[layer]
    device = next(loaded.model.parameters()).device
    wanted = [u for u in units if state.image_index[u, 0] >= 0]
    requests = [Request(u, int(state.image_index[u, 0]), (int(state.positions[u, 0, 0]),
                                                          int(state.positions[u, 0, 1]))) for u in wanted]
    images = {r.image: data.get(r.image, device) for r in requests}
    projected = project_requests(loaded.model, images, layer, requests, receptive_field=field_)
    cells: dict[int, Cell] = {}
    for req, (proj, box) in zip(requests, projected, strict=True):
        patch = deprocess(images[req.image][:, box[0]:box[1], box[2]:box[3]], loaded.preprocessing)
        cells[req.channel] = Cell(float(state.values[req.channel, 0]), req.image, req.position, box, proj, patch)
    return [cells.get(u) for u in units]


def _load(config: EvolveConfig, path: Path, device: torch.device) -> LoadedModel:
    return load_model(config.model, str(path), device=device, allow_pickle=config.allow_pickle,
                      allow_download=config.allow_download)


@dataclass
class _Plan:
    """What every checkpoint shares, settled before the first one is read."""

    checkpoints: CheckpointList
    device: torch.device
    layers: list[str]
    convs: dict[str, str | None]
    fields: dict[str, ReceptiveField | None]
    data: _Images
    preprocessing: dict


def _plan(config: EvolveConfig) -> _Plan:
    """Checkpoints, dataset, model name and layers, checked on the architecture with random weights: an unknown
    model or layer is one error, not a skipped checkpoint each."""
    checkpoints = list_checkpoints(list(config.checkpoints))
    images = list_images(config.data, config.limit)
    device = resolve_device(config.device)
    template = load_model(config.model, "none", device=device)
    prep = template.preprocessing
    shape = (1, prep.channels, prep.crop, prep.crop)
    layers = list(dict.fromkeys(config.layers)) if config.layers else default_layers(template.model, shape)
    resolve_layers(template.model, layers)
    found = analyse_receptive_fields(template.model, shape)
    fields = {layer: f if isinstance(f, ReceptiveField) else None for layer, f in
              ((layer, found.get(layer)) for layer in layers)}
    return _Plan(checkpoints, device, layers, {layer: layer_conv(template.model, layer) for layer in layers}, fields,
                 _Images(images, template, config.batch_size), prep.to_dict())


def _scan_all(config: EvolveConfig, plan: _Plan, failures: list[Failure], progress: Callable[[str], None] | None
              ) -> tuple[list[int], list[MineResult], list[dict[str, tuple[float, float]]]]:
    """Pass 1: (indices of the loadable checkpoints, their scans, their filter trends); the others go to
    ``failures`` with one line each."""
    good, scans, rms = [], [], []
    for t, path in enumerate(plan.checkpoints.paths):
        try:
            loaded = _load(config, path, plan.device)
        except (VizkitError, RuntimeError, ValueError, OSError) as err:
            message = str(err).splitlines()[0] if str(err) else type(err).__name__
            if progress:
                progress(f"skipped checkpoint {path}: {message}")
            failures.append(Failure(str(path), f"checkpoint skipped: {message}", 2))
            continue
        scans.append(_scan(loaded, plan.data, plan.layers, config.top_k))
        if len(scans) == 1:  # a bad --units fails now, not after every checkpoint was scanned
            for layer in plan.layers:
                select_units(scans[0], layer, config.units)
        rms.append({layer: filter_trend(loaded.model, plan.convs[layer]) for layer in plan.layers})
        good.append(t)
        if progress:
            progress(f"scanned {path}")
    return good, scans, rms


def evolve(config: EvolveConfig, *, progress: Callable[[str], None] | None = None
           ) -> tuple[EvolveResult | None, list[Failure], dict[str, float]]:
    """Both passes (see the module docstring); returns the result (None when no checkpoint loaded), the skipped
    checkpoints and images, and timings. Data, model and layer problems raise before any checkpoint is read."""
    config.check()
    plan = _plan(config)
    failures: list[Failure] = []
    t0 = time.perf_counter()
    good, scans, rms = _scan_all(config, plan, failures, progress)
    timings = {"scan": time.perf_counter() - t0}
    if not scans:
        return None, failures, timings
    failures += [Failure(p, why, 2) for p, why in scans[0].skipped]
    units = {layer: select_units(scans[-1], layer, config.units) for layer in plan.layers}
    cells: dict[str, list[list[Cell | None]]] = {layer: [] for layer in plan.layers}
    t0 = time.perf_counter()
    for t, scan in zip(good, scans, strict=True):  # pass 2: each unit's strongest activation, projected
        loaded = _load(config, plan.checkpoints.paths[t], plan.device)
        for layer in plan.layers:
            cells[layer].append(_project(loaded, scan, plan.data, layer, units[layer], plan.fields[layer]))
        if progress:
            progress(f"projected {plan.checkpoints.paths[t]}")
    timings["project"] = time.perf_counter() - t0
    cp = plan.checkpoints
    kept = CheckpointList([cp.paths[t] for t in good], [cp.numbers[t] for t in good], cp.order)
    evolution = [stack_layer(layer, plan.convs[layer], [s.layers[layer] for s in scans], [r[layer] for r in rms])
                 for layer in plan.layers]
    skipped = [f.image for f in failures if f.message.startswith("checkpoint skipped")]
    result = EvolveResult(kept, scans[-1].paths, evolution, units, cells, scans[-1].skipped, skipped,
                          plan.preprocessing, images_scanned=scans[-1].images_scanned)
    return result, failures, timings


def run_evolve(config: EvolveConfig, *, progress: Callable[[str], None] | None = None) -> EvolveReport:
    """Run ``vizkit evolve`` and write ``OUT/evolve/`` (evolve.npz, evolve.pdf, html/, evolve.manifest.json)."""
    started = time.perf_counter()
    result, failures, timings = evolve(config, progress=progress)
    if result is None:
        failures.append(Failure(str(config.data), "no checkpoint could be loaded; nothing written", 2))
        return EvolveReport(failures=failures, timings=timings)
    settings = {"data": str(config.data), "checkpoints": [str(p) for p in result.checkpoints.paths],
                "order": result.checkpoints.order, "layers": [e.layer for e in result.layers],
                "units": config.units, "top_k": config.top_k, "patches": config.patches,
                "batch_size": config.batch_size, "limit": config.limit, "device": config.device,
                "skipped_checkpoints": result.skipped_checkpoints}
    info = ReportInfo(str(config.data), config.model, f"{len(result.checkpoints.paths)} checkpoints", None, True,
                      result.preprocessing, settings, config.command)
    t0 = time.perf_counter()
    folder = write_evolve_outputs(result, info, Path(config.out), patches=config.patches,
                                  timings={**timings, "total_before_render": t0 - started})
    timings["render"] = time.perf_counter() - t0
    return EvolveReport(written=[folder], failures=failures, result=result, timings=timings)


__all__ = ["DEFAULT_UNITS", "EvolveConfig", "EvolveReport", "evolve", "run_evolve"]

