"""The shortcut verdict on a family of labs: every threshold fitted on one half, the figures on the other.

    python benchmarks/bench_shortcut_family.py [--labs 60] [--control-every 3] [--seed 0] [--out family.json]
                                               [--write-thresholds]

``vizkit.lab.family`` draws the labs (mark style, place, size, colour, opacity, class, rate, redundancy; every
third a control, in turn clean and *ignored*: the mark on the analysed images only, never in training); each is
built and its labnet trained single-threaded with fixed seeds, so the figures do not depend on the machine's
thread count. ``vizkit.lab.fit`` fits the merge thresholds, the score's weights, the
flag cut and the attribution method on the fitting half (``halves``) and reports on the held-out half:

- detection ROC-AUC over classes: the shortcut labs' mark classes against the controls' classes (target
  >= 0.95), and against every unmarked class;
- the share of shortcut labs whose mark class ranks first by suspicion (target >= 0.9);
- the share of controls with no class flagged (target >= 0.9);
- cluster F1: the mark class's most suspicious cluster against its marked images;

then the shipped lab (``vizkit lab make`` validation split, the shipped labnet) with the fitted thresholds: its
mark class's rank and cluster F1 (target >= 0.95); the same for the other methods' thresholds.
``--write-thresholds`` stores the thresholds fitted for each method (the best first: the default) as the
shipped ``vizkit/project/shortcuts/thresholds.json``.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
from _machine import machine

from vizkit.lab.family import family
from vizkit.lab.fit import evaluate, fit_all, halves, run_family
from vizkit.project.shortcuts.judge import judge
from vizkit.project.shortcuts.verdict import THRESHOLDS_JSON, Thresholds, write_fitted

METHODS = ("gradxinput", "lrp-epsilon-plus-flat")


def shipped_lab(th: Thresholds) -> dict:
    from vizkit.lab import LabSpec, make_lab
    from vizkit.lab.train import load_split
    from vizkit.load import load_model

    with tempfile.TemporaryDirectory() as tmp:
        lab = make_lab(LabSpec(per_class={"train": 1, "val": 50, "test": 1}), Path(tmp) / "lab")
        x, y, paths = load_split(Path(tmp) / "lab", "val", list(lab["classes"]))
    marked = np.array([p in set(lab["marked_images"]) for p in paths])
    model = load_model("labnet").model.eval()
    verdicts = judge(model, x, y, x, y, th)
    cls = int(lab["marked_class_index"])
    v = next(v for v in verdicts if v.class_index == cls)
    top = v.top
    members = v.images[top.members] if top is not None else np.zeros(0, int)
    truth = np.flatnonzero(marked & (y.numpy() == cls))
    f1 = 2 * np.isin(members, truth).sum() / (members.size + truth.size)
    return {"rank_of_mark_class": [w.class_index for w in verdicts].index(cls) + 1, "cluster_f1": float(f1),
            "flagged": [w.class_index for w in verdicts if w.flagged], "split_merge": v.split_merge(),
            "suspicion": {w.class_index: round(w.suspicion, 4) for w in verdicts}}


def by_style(report: dict, labs: dict) -> dict:
    rows: dict[str, list[bool]] = defaultdict(list)
    for row in report["labs"]:
        spec = labs[row["lab"]]
        key = "clean" if spec.mark is None else ("ignored-" if spec.ignored else "") + spec.mark.style + (
            "-redundant" if spec.relabel else "")
        rows[key].append(not row["flagged"] if spec.control else spec.mark_class in row["flagged"])
    return {k: f"{sum(v)}/{len(v)}" for k, v in sorted(rows.items())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--labs", type=int, default=60)
    ap.add_argument("--control-every", type=int, default=3, help="every N-th lab is a control")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--write-thresholds", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    labs = family(args.labs, args.seed, args.control_every)
    fit_half, _ = halves(labs)
    runs = run_family(labs, METHODS, log=True)
    t_train = time.perf_counter() - t0
    names = {lab.name for lab in fit_half}
    fitted = fit_all([r for r in runs if r.spec.name in names], METHODS)
    th = next(iter(fitted.values()))
    held_out = [r for r in runs if r.spec.name not in names]
    report = evaluate(held_out, th)
    report["detected_by_style"] = by_style(report, {lab.name: lab for lab in labs})
    report["shipped_lab"] = shipped_lab(th)
    report["other_methods"] = {}
    for method, other in list(fitted.items())[1:]:
        row = evaluate(held_out, other)
        report["other_methods"][method] = {k: row[k] for k in ("auc_vs_clean", "mark_class_first",
                                                                 "clean_not_flagged", "cluster_f1")}
        report["other_methods"][method]["shipped_lab"] = shipped_lab(other)
    report["thresholds"] = th.to_json()
    report["seconds"] = {"build_train_maps": t_train, "total": time.perf_counter() - t0}
    report["machine"] = machine("zennit", "captum")
    summary = {k: v for k, v in report.items() if k not in ("labs", "thresholds")}
    print(json.dumps(summary, indent=1))
    for row in report["labs"]:
        print(row)
    if args.out:
        args.out.write_text(json.dumps(report, indent=1) + "\n")
    if args.write_thresholds:
        write_fitted(fitted, THRESHOLDS_JSON)


if __name__ == "__main__":
    main()
