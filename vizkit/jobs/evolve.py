"""``vizkit evolve`` as a function: ``run_evolve(EvolveConfig(checkpoints=[...], data=...))``;
``evolve_checkpoints(...)`` returns the numbers without writing files.

Zeiler & Fergus Fig. 4 for your own training run. Pass 1, per checkpoint in training order: load the weights, run
the exact dataset scan of ``vizkit mine`` (top-K per unit, K = 1 by default) and read the filter RMS. The units to
follow are then chosen on the last checkpoint (``--units``, as in ``vizkit mine``). Pass 2, per checkpoint: project
each chosen unit's strongest activation over the dataset with the deconvnet (the batched projections of ``vizkit
mine``). A checkpoint that cannot be loaded is skipped with one line and the run goes on (exit 2 at the end).

What each layer ranks is ``vizkit mine``'s plan (``vizkit.scan.saturation.plan_ranking``), settled once on the
architecture: a layer ending in a saturating activation (ReLU6 ...) is ranked by the value before the cap, so its
strongest images do not tie at the cap, and default layers that duplicate another's top-K images are left out; the
pages say so.

Images are read through one ``DatasetStream``: preprocessed once and kept in memory when they fit in
``CACHE_BYTES``; otherwise every checkpoint streams them from disk again. One ``RunContext`` is built on the
architecture with random weights (the template): device, input shape, layers, receptive fields and provenance come
from it; each checkpoint is then loaded with the job's own model options and only its weights differ.
"""
from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from vizkit.capture.probe import probe_input
from vizkit.capture.receptive_field import ReceptiveField
from vizkit.errors import UserInputError, VizkitError
from vizkit.jobs.common import Failure, JobReport, ModelJob
from vizkit.jobs.context import RunContext
from vizkit.jobs.mine_notes import image_independent_layers, independence_note, plan_notes, ranking_note
from vizkit.load import LoadedModel
from vizkit.load.checkpoints import CheckpointList, list_checkpoints
from vizkit.load.dataset import ImageDataset, list_images
from vizkit.outputs.progress import warn
from vizkit.project.evolution import filter_trend, layer_conv, stack_layer
from vizkit.project.mine_projection import Request, project_requests, select_units
from vizkit.project.results import Cell, EvolveResult
from vizkit.scan.saturation import RankPlan, plan_ranking, probe_batch
from vizkit.scan.state import ScanState, scan_batches
from vizkit.scan.stream import DatasetStream, nothing_read
from vizkit.scan.topk import MineResult

log = logging.getLogger("vizkit")

DEFAULT_UNITS = "top:8"  # rows per layer in the Fig. 4 grid: the 8 strongest units (mean activation) at the end
CACHE_BYTES = 1 << 30


@dataclass(kw_only=True)
class EvolveConfig(ModelJob):
    """Options of ``vizkit evolve``. ``checkpoints``: weight files and/or folders of them; ``data``: a folder or
    image-list file as for ``vizkit mine``; ``layers`` None: one per resolution stage; ``units``: ``all``,
    ``top:N`` (strongest mean activation at the last checkpoint) or channels ``5`` / ``3,7,12``; ``top_k``: images
    kept per unit and checkpoint (the stability of the top-K set uses them); ``patches``: show the image patch beside
    each projection."""

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


def _scan(loaded: LoadedModel, data: DatasetStream, rank: RankPlan, k: int) -> MineResult:
    state = ScanState(rank.layers, k, device=data.device, sources=rank.sources)
    run = scan_batches(loaded.model, data, state)
    images = data.dataset.images
    paths = [str(p) for p in images.paths]
    return state.result(paths, labels=images.labels, skipped=[(paths[i], why) for i, why in run.skipped])


def _project(ctx: RunContext, loaded: LoadedModel, scan: MineResult, data: DatasetStream, layer: str,
             units: Sequence[int], field_: ReceptiveField | None) -> list[Cell | None]:
    """Each unit's strongest activation at this checkpoint (``loaded``: the template's architecture with the
    checkpoint's weights), projected (None where the unit never had an entry)."""
    state = scan.layers[layer]
    wanted = [u for u in units if state.image_index[u, 0] >= 0]
    requests = [Request(u, int(state.image_index[u, 0]), (int(state.positions[u, 0, 0]),
                                                          int(state.positions[u, 0, 1]))) for u in wanted]
    images = {r.image: data.image(r.image, ctx.device) for r in requests}
    projected = project_requests(loaded.model, images, layer, requests, receptive_field=field_)
    cells: dict[int, Cell] = {}
    for req, (proj, box) in zip(requests, projected, strict=True):
        patch = ctx.display(images[req.image][:, box[0]:box[1], box[2]:box[3]])
        cells[req.channel] = Cell(float(state.values[req.channel, 0]), req.image, req.position, box, proj, patch)
    return [cells.get(u) for u in units]


def _load(config: EvolveConfig, ctx: RunContext, path: Path) -> LoadedModel:
    """The job's model (with its own-model options) on the context's device, with the checkpoint's weights."""
    return dataclasses.replace(config, weights=str(path), device=str(ctx.device)).load()


@dataclass
class _Plan:
    """What every checkpoint shares, settled before the first one is read."""

    checkpoints: CheckpointList
    ctx: RunContext
    rank: RankPlan  # what each layer ranks (the value before a cap) and the default layers left out
    layers: list[str]
    convs: dict[str, str | None]
    fields: dict[str, ReceptiveField | None]
    data: DatasetStream


def _plan(config: EvolveConfig) -> _Plan:
    """Checkpoints, dataset, model name and layers, checked on the architecture with random weights: an unknown
    model or layer is one error, not a skipped checkpoint each."""
    checkpoints = list_checkpoints(list(config.checkpoints))
    for line in checkpoints.notes:  # modification time decided, or a duplicate was dropped: the user must know
        warn(f"vizkit: {line}")
    images = list_images(config.data, config.limit)
    ctx = RunContext.from_job(dataclasses.replace(config, weights="none"))
    rank = plan_ranking(ctx.model, ctx.layers(config.layers), probe_batch(ctx.model, ctx.input_shape),
                        dedupe=not config.layers)  # module names: the same for every checkpoint
    layers = rank.layers
    found = ctx.receptive_fields()
    fields = {layer: f if isinstance(f, ReceptiveField) else None for layer, f in
              ((layer, found.get(layer)) for layer in layers)}
    return _Plan(checkpoints, ctx, rank, layers, {layer: layer_conv(ctx.model, layer) for layer in layers}, fields,
                 DatasetStream(ImageDataset(images, ctx.loaded.preprocessing), batch_size=config.batch_size,
                               device=ctx.device, cache_bytes=CACHE_BYTES, summary=False))


def _scan_all(config: EvolveConfig, plan: _Plan, failures: list[Failure], progress: Callable[[str], None] | None
              ) -> tuple[list[int], list[MineResult], list[dict[str, tuple[float, float]]]]:
    """Pass 1: (indices of the loadable checkpoints, their scans, their filter trends); the others go to
    ``failures`` with one line each. ``progress`` gets one line per checkpoint."""
    good, scans, rms = [], [], []
    paths = plan.checkpoints.paths
    for t, path in enumerate(paths):
        where = f"checkpoint {t + 1}/{len(paths)}"
        try:
            loaded = _load(config, plan.ctx, path)
        except (VizkitError, RuntimeError, ValueError, OSError) as err:
            message = str(err).splitlines()[0] if str(err) else type(err).__name__
            if progress:
                progress(f"{where} skipped: {message}")
            failures.append(Failure(str(path), f"checkpoint skipped: {message}", 2))
            continue
        started = time.perf_counter()
        plan.data.label = f"{where} {path.name}"  # the bar while it is scanned (a terminal only)
        scans.append(_scan(loaded, plan.data, plan.rank, config.top_k))
        if not scans[0].images_scanned:
            raise nothing_read(config.data, len(scans[0].paths), scans[0].skipped)
        if len(scans) == 1:  # a bad --units fails now, not after every checkpoint was scanned
            for layer in plan.layers:
                select_units(scans[0], layer, config.units)
        rms.append({layer: filter_trend(loaded.model, plan.convs[layer]) for layer in plan.layers})
        good.append(t)
        if progress:
            progress(f"{where} scanned: {path} ({scans[-1].images_scanned} images, "
                     f"{time.perf_counter() - started:.1f} s)")
    return good, scans, rms


def evolve_checkpoints(config: EvolveConfig, *, progress: Callable[[str], None] | None = None
                       ) -> tuple[EvolveResult | None, list[Failure], dict[str, float]]:
    """Both passes (see the module docstring); returns the result (None when no checkpoint loaded), the skipped
    checkpoints and images, and timings. Data, model and layer problems raise before any checkpoint is read."""
    config.check()
    return _evolve(config, _plan(config), progress)


def _evolve(config: EvolveConfig, plan: _Plan, progress: Callable[[str], None] | None
            ) -> tuple[EvolveResult | None, list[Failure], dict[str, float]]:
    failures: list[Failure] = []
    t0 = time.perf_counter()
    good, scans, rms = _scan_all(config, plan, failures, progress)
    timings = {"load_model": plan.ctx.load_seconds, "scan": time.perf_counter() - t0}
    if not scans:
        return None, failures, timings
    failures += [Failure(p, why, 2) for p, why in scans[0].skipped]
    units = {layer: select_units(scans[-1], layer, config.units) for layer in plan.layers}
    cells: dict[str, list[list[Cell | None]]] = {layer: [] for layer in plan.layers}
    t0 = time.perf_counter()
    for t, scan in zip(good, scans, strict=True):  # pass 2: each unit's strongest activation, projected
        loaded = _load(config, plan.ctx, plan.checkpoints.paths[t])
        for layer in plan.layers:
            cells[layer].append(_project(plan.ctx, loaded, scan, plan.data, layer, units[layer],
                                         plan.fields[layer]))
        if progress:
            progress(f"checkpoint {t + 1}/{len(plan.checkpoints.paths)} projected: {plan.checkpoints.paths[t]}")
    timings["project"] = time.perf_counter() - t0
    cp = plan.checkpoints
    kept = CheckpointList([cp.paths[t] for t in good], [cp.numbers[t] for t in good], cp.order, cp.notes)
    evolution = [stack_layer(layer, plan.convs[layer], [s.layers[layer] for s in scans], [r[layer] for r in rms])
                 for layer in plan.layers]
    skipped = [f.image for f in failures if f.message.startswith("checkpoint skipped")]
    notes = list(cp.notes) + ranking_note(scans[-1]) + plan_notes(plan.rank.duplicates)
    notes += [f"skipped checkpoints (could not be loaded): {', '.join(skipped)}"] if skipped else []
    blank = probe_input(plan.ctx.model, plan.ctx.input_shape)  # which ops run is the architecture's, not the weights'
    notes += independence_note(image_independent_layers(plan.ctx.model, plan.layers, blank))
    result = EvolveResult(kept, scans[-1].paths, evolution, units, cells, scans[-1].skipped, skipped,
                          plan.ctx.loaded.preprocessing.to_dict(), images_scanned=scans[-1].images_scanned,
                          patches=config.patches, notes=notes)
    return result, failures, timings


def run_evolve(config: EvolveConfig, *, progress: Callable[[str], None] | None = None) -> EvolveReport:
    """Run ``vizkit evolve`` and write ``OUT/evolve/`` (evolve.npz, evolve.pdf, html/, evolve.manifest.json)."""
    from vizkit.render.writer import write_outputs

    started = time.perf_counter()
    config.check()
    plan = _plan(config)
    result, failures, timings = _evolve(config, plan, progress)
    if result is None:
        failures.append(Failure(str(config.data), "no checkpoint could be loaded; nothing written", 2, False))
        return EvolveReport(failures=failures, timings=timings)
    settings = {"data": str(config.data), "checkpoints": [str(p) for p in result.checkpoints.paths],
                "order": result.checkpoints.order, "layers": [e.layer for e in result.layers],
                "units": config.units, "top_k": config.top_k, "patches": config.patches,
                "batch_size": config.batch_size, "limit": config.limit, "device": str(plan.ctx.device),
                "skipped_checkpoints": result.skipped_checkpoints}
    # The context's provenance is the template's (random init): the weights here are the run's checkpoints.
    info = dataclasses.replace(plan.ctx.info(str(config.data), settings),
                               weights=f"{len(result.checkpoints.paths)} checkpoints", weights_sha256=None,
                               pretrained=None, seed=None, checksum_match=None)
    t0 = time.perf_counter()
    folder = write_outputs(result, info, config.out, None, {**timings, "total_before_render": t0 - started})
    timings["render"] = time.perf_counter() - t0
    return EvolveReport(written=[folder], failures=failures, result=result, timings=timings)


__all__ = ["DEFAULT_UNITS", "EvolveConfig", "EvolveReport", "evolve_checkpoints", "run_evolve"]
