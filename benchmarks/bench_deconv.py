"""vizkit's deconvnet against Captum's NeuronDeconvolution: same model, image and units; agreement and speed.

    python benchmarks/bench_deconv.py [--units 32] [--threads 2] [--repeat 1] [--layers L ...] [--default-cli]

VGG16 (seeded random weights, eval) on one 224x224 photo (matplotlib's grace_hopper.jpg, ImageNet mean/std). For
``features.29`` (ReLU after conv5_3) and ``features.15`` (ReLU after conv3_3) the top-K units that vizkit ranks
(``top_units``) are projected by

- vizkit, end to end: ``deconv(model, x, [layer], top_k=K)`` (its forward, ranking, receptive fields, projections);
- Captum: K x ``NeuronDeconvolution(model, layer_module).attribute(x, neuron_selector=(c, y, x))``;
- vizkit with ``crop=False`` (full-image backward passes), for information: what the receptive-field crop buys.

Each round runs the three back to back (the order rotates between rounds); ``--repeat`` rounds. Reported: the best
wall time of each and their ratio, the median of the per-round ratios, and the ratio of process CPU times (less
sensitive to other processes on a shared machine; only compare times from the same run). vizkit seeds each
projection with the unit's activation, so ``projection / activation`` must equal Captum's attribution: the largest
relative error over units (max |a - b| / max |b| per unit) must stay below 1e-4, else it prints FAIL and exits 1.

``--default-cli`` also times the default CLI job ``vizkit deconv IMAGE`` (skipped when the CLI is not installed).
"""
from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torchvision
from _machine import machine  # sibling module; benchmarks run as scripts

# The module itself (not ``vizkit.project.deconv``, which the package rebinds to the deconv function): PathProbe
# wraps its functions to see which path deconv takes.
vd = importlib.import_module("vizkit.project.deconv")

LAYERS = ("features.29", "features.15")
NAMES = {"features.29": "conv5_3", "features.15": "conv3_3"}
TOLERANCE = 1e-4


@dataclass
class Row:
    """Per-round wall and CPU seconds of each contender (``vizkit``, ``captum``, ``full`` = vizkit crop=False)."""

    layer: str
    units: int
    wall: dict[str, list[float]]
    cpu: dict[str, list[float]]
    max_rel_err: float
    path: str
    crop_px: str

    def best(self, name: str) -> float:
        return min(self.wall[name])

    def ratio(self, name: str) -> float:
        """Captum's best wall time over ``name``'s best wall time."""
        return self.best("captum") / self.best(name)

    def round_ratio(self, name: str) -> float:
        """Median over rounds of Captum's wall time over ``name``'s, each pair timed back to back."""
        return float(np.median([c / v for c, v in zip(self.wall["captum"], self.wall[name], strict=True)]))

    def cpu_ratio(self, name: str) -> float:
        """Captum's best process CPU time over ``name``'s: less sensitive to other processes than wall time."""
        return min(self.cpu["captum"]) / min(self.cpu[name])



def sample_image() -> torch.Tensor:
    """grace_hopper.jpg resized to 256, centre-cropped to 224, ImageNet mean/std: (1, 3, 224, 224) float32."""
    from matplotlib import cbook
    from PIL import Image
    from torchvision import transforms

    with cbook.get_sample_data("grace_hopper.jpg") as f:
        img = Image.open(f).convert("RGB")
    tf = transforms.Compose([transforms.Resize(256), transforms.CenterCrop(224), transforms.ToTensor(),
                             transforms.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])
    return tf(img).unsqueeze(0)


def timed(fn: Callable[[], object]) -> tuple[float, float, object]:
    """(wall seconds, CPU seconds of this process over all threads, result)."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn()
    return time.perf_counter() - wall, time.process_time() - cpu, result


def captum_projections(model: torch.nn.Module, x: torch.Tensor, layer: str,
                       units: Sequence[vd.Unit]) -> list[np.ndarray]:
    from captum.attr import NeuronDeconvolution

    method = NeuronDeconvolution(model, dict(model.named_modules())[layer])
    return [method.attribute(x, neuron_selector=(u.channel, *u.position))[0].detach().numpy() for u in units]


class PathProbe:
    """Record which projection path ``deconv`` takes and the crop batches it runs (wraps the module's functions)."""

    def __init__(self) -> None:
        self.paths: list[str] = []
        self.crops: dict[tuple[int, int], int] = {}

    def __enter__(self) -> PathProbe:
        self._saved = {n: getattr(vd, n) for n in ("project_full", "project_cropped", "forward_capture")}
        full, cropped, forward = self._saved.values()

        def project_full(*a: object, **kw: object) -> torch.Tensor:
            self.paths.append("full")
            return full(*a, **kw)

        def project_cropped(*a: object, **kw: object) -> torch.Tensor:
            self.paths.append("crop")
            return cropped(*a, **kw)

        def forward_capture(model: torch.nn.Module, x: torch.Tensor, *a: object, **kw: object) -> object:
            if self.paths and self.paths[-1] == "crop":  # a batch of same-sized crops
                hw = (int(x.shape[2]), int(x.shape[3]))
                self.crops[hw] = self.crops.get(hw, 0) + int(x.shape[0])
            return forward(model, x, *a, **kw)

        vd.project_full, vd.project_cropped, vd.forward_capture = project_full, project_cropped, forward_capture
        return self

    def __exit__(self, *exc: object) -> None:
        for name, fn in self._saved.items():
            setattr(vd, name, fn)

    def path(self) -> str:
        return "/".join(sorted(set(self.paths))) or "?"

    def crop_sizes(self) -> str:
        return ", ".join(f"{h}x{w}:{n}" for (h, w), n in sorted(self.crops.items(), key=lambda kv: -kv[1])) or "-"


def max_rel_err(ours: Sequence[np.ndarray], ref: Sequence[np.ndarray]) -> float:
    tiny = np.finfo(np.float32).tiny
    return max(float(np.abs(a - b).max() / max(np.abs(b).max(), tiny)) for a, b in zip(ours, ref, strict=True))


def bench_layer(model: torch.nn.Module, x: torch.Tensor, layer: str, k: int, repeat: int) -> Row:
    cap = vd.forward_capture(model, x, [layer])
    units = [u for u, _ in vd.top_units(cap.outputs[layer], k)]
    del cap
    outputs: dict[str, object] = {}

    def run_vizkit() -> object:
        with PathProbe() as probe:
            outputs["probe"] = probe
            return vd.deconv(model, x, [layer], top_k=k)

    contenders = {
        "vizkit": run_vizkit,
        "captum": lambda: captum_projections(model, x, layer, units),
        "full": lambda: vd.deconv(model, x, [layer], top_k=k, crop=False),
    }
    wall: dict[str, list[float]] = {name: [] for name in contenders}
    cpu: dict[str, list[float]] = {name: [] for name in contenders}
    errors: list[float] = []
    order = list(contenders)
    for _ in range(repeat):
        for name in order:
            t, c, outputs[name] = timed(contenders[name])
            wall[name].append(t)
            cpu[name].append(c)
        order = order[1:] + order[:1]  # rotate so no contender always runs first
        ref = outputs["captum"]
        for name in ("vizkit", "full"):
            got = outputs[name].layers[0].units  # type: ignore[attr-defined]
            if [(p.channel, p.position) for p in got] != [(u.channel, u.position) for u in units]:
                raise SystemExit(f"FAIL: deconv picked other units at {layer} than top_units")
            errors.append(max_rel_err([p.projection / p.activation for p in got], ref))  # type: ignore[arg-type]
    probe: PathProbe = outputs["probe"]  # type: ignore[assignment]
    return Row(layer, len(units), wall, cpu, max(errors), probe.path(), probe.crop_sizes())


def _x(ratio: float) -> str:
    return f"{ratio:>5.2f}x" if ratio < 10 else f"{ratio:>5.1f}x"


def bench_cli(repeat: int) -> None:
    exe = str(Path(sys.executable).with_name("vizkit")) if Path(sys.executable).with_name("vizkit").exists() \
        else shutil.which("vizkit")
    if exe is None or importlib.util.find_spec("vizkit_cli.main") is None:
        print("\ndefault CLI: skipped (no `vizkit` console script / vizkit_cli.main yet)")
        return
    from matplotlib import cbook

    image = str(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))
    best, rc, tail = float("inf"), 0, ""
    for _ in range(repeat):
        with tempfile.TemporaryDirectory() as tmp:
            t, _, proc = timed(lambda: subprocess.run([exe, "deconv", image], check=False, cwd=tmp,
                                                      capture_output=True, text=True))
            rc, tail = proc.returncode, (proc.stderr or proc.stdout)[-2000:]
            best = min(best, t)
    print(f"\ndefault CLI: `vizkit deconv grace_hopper.jpg` wall {best:.2f} s (best of {repeat}, exit {rc})")
    if rc != 0:
        print(tail)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--units", type=int, default=32, help="units projected per layer (default 32)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    parser.add_argument("--repeat", type=int, default=1, help="alternating rounds; best time is reported (default 1)")
    parser.add_argument("--layers", nargs="+", default=list(LAYERS), help="VGG16 layers (default: %(default)s)")
    parser.add_argument("--default-cli", action="store_true", help="also time the default `vizkit deconv` job")
    args = parser.parse_args(argv)

    warnings.filterwarnings("ignore")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = torchvision.models.vgg16().eval()
    x = sample_image()
    print(f"machine: {machine('captum')}")
    print(f"model: VGG16 random init (seed 0), image grace_hopper.jpg 224x224, {args.units} units, "
          f"{args.repeat} round(s); load average (1 min) at the start: {os.getloadavg()[0]:.1f}\n")
    with torch.no_grad():
        model(x)  # warm-up: allocator and oneDNN primitives

    rows = [bench_layer(model, x, layer, args.units, args.repeat) for layer in args.layers]
    print("wall seconds are the best of the rounds; ratio = Captum / vizkit (best / best); round = median of the")
    print("per-round ratios (each round times the contenders back to back); cpu = the ratio of process CPU time\n")
    header = (f"{'layer':<21} {'units':>5} {'vizkit s':>8} {'captum s':>8} {'ratio':>6} {'round':>6} {'cpu':>6} "
              f"{'crop=False s':>12} {'ratio':>6} {'max rel err':>11}  path")
    print(header)
    print("-" * len(header))
    for r in rows:
        print(f"{r.layer + ' (' + NAMES.get(r.layer, '?') + ')':<21} {r.units:>5} {r.best('vizkit'):>8.2f} "
              f"{r.best('captum'):>8.2f} {_x(r.ratio('vizkit'))} {_x(r.round_ratio('vizkit'))} "
              f"{_x(r.cpu_ratio('vizkit'))} {r.best('full'):>12.2f} {_x(r.ratio('full'))} "
              f"{r.max_rel_err:>11.1e}  {r.path}")
    for r in rows:
        if r.crop_px != "-":
            print(f"crop batches at {r.layer} (h x w: crops): {r.crop_px}")
    print(f"load average (1 min) at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    ok = all(r.max_rel_err < TOLERANCE for r in rows)
    print(f"\nagreement with Captum (max rel err < {TOLERANCE:g}): {'PASS' if ok else 'FAIL'}")
    targets = {"features.29": 2.0, "features.15": 10.0}
    for r in rows:
        if r.layer in targets:
            met = r.ratio("vizkit") >= targets[r.layer]
            print(f"target >= {targets[r.layer]:g}x at {NAMES[r.layer]}: {'met' if met else 'NOT met'} "
                  f"({r.ratio('vizkit'):.2f}x)")
    if args.default_cli:
        bench_cli(args.repeat)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
