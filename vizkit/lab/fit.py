"""Fit every threshold of the shortcut verdict on one half of a lab family; measure it on the other half.

``run_family(labs, methods)`` builds and trains each lab (``family``) and computes its analysis images' maps with
each method. ``fit_all(runs, methods)`` then, on the runs given (the fitting half), for each method:

1. merge thresholds: over every pair of spectral clusters of a class, (IoU, similarity) ->
   "both clusters are mostly marked images" (the pairs that are one finding); the grid point with the best F1,
   ties to the stricter thresholds;
2. the score's weights: a logistic regression (scikit-learn, balanced classes, standardised features) over every
   judged cluster, positive when it is mostly marked images of the mark class;
3. ``flag``: the class-suspicion cut with the best balanced accuracy between shortcut classes and the classes of
   controls, at the middle of the widest gap among the best cuts;

and keeps every method's thresholds, the one with the best detection ROC-AUC on the fitting half first (the
default). ``evaluate(runs, th)`` reports on any
runs (the held-out half): detection ROC-AUC (shortcut classes against controls' classes, and against every
unmarked class), the share of shortcut labs whose mark class ranks first, of controls with no class
flagged, and the cluster F1 of the mark class's most suspicious cluster against its marked images.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from vizkit.lab.family import FamilyLab, LabData, build_lab, train_lab
from vizkit.project.shortcuts.judge import ClassVerdict, judge_class
from vizkit.project.shortcuts.maps import attribution_maps
from vizkit.project.shortcuts.merge import pair_figures
from vizkit.project.shortcuts.spray import DEFAULT_SIDE, pool_maps, spectral_clusters
from vizkit.project.shortcuts.verdict import FEATURES, Thresholds, score

__all__ = ["LabRun", "evaluate", "fit_all", "halves", "judge_run", "run_family", "run_lab"]


def halves(labs: list[FamilyLab]) -> tuple[list[FamilyLab], list[FamilyLab]]:
    """(fitting half, held-out half): alternate within each kind of lab (clean controls, ignored-mark controls,
    shortcut labs), so both halves hold every kind."""
    kinds = ([lab for lab in labs if lab.mark is None], [lab for lab in labs if lab.ignored],
             [lab for lab in labs if not lab.control])
    return [lab for k in kinds for lab in k[::2]], [lab for k in kinds for lab in k[1::2]]


@dataclass
class LabRun:
    data: LabData
    model: torch.nn.Module
    maps: dict[str, torch.Tensor]
    verdicts: dict[str, list[ClassVerdict]] = field(default_factory=dict)

    @property
    def spec(self) -> FamilyLab:
        return self.data.spec


def run_lab(spec: FamilyLab, methods: tuple[str, ...]) -> LabRun:
    data = build_lab(spec)
    model = train_lab(data)
    maps = {m: attribution_maps(model, data.x_val, data.y_val, m)[0] for m in methods}
    return LabRun(data, model, maps)


def run_family(labs: list[FamilyLab], methods: tuple[str, ...], log: bool = False) -> list[LabRun]:
    runs = []
    for spec in labs:
        runs.append(run_lab(spec, methods))
        if log:
            print(f"trained {spec.name}", flush=True)
    return runs


def _classes(run: LabRun) -> list[tuple[int, np.ndarray]]:
    y = run.data.y_val.numpy()
    return [(c, np.flatnonzero(y == c)) for c in sorted(set(y.tolist()))]


def _recipients(run: LabRun, cls: int) -> torch.Tensor:
    return run.data.x_test[run.data.y_test != cls]


def _is_mark(run: LabRun, cls: int, members: np.ndarray) -> bool:
    """``members`` (images of class ``cls``) are mostly marked images of the lab's mark class."""
    return not run.spec.control and cls == run.spec.mark_class and run.data.marked_val[members].mean() > 0.5


def _merge_thresholds(runs: list[LabRun], method: str) -> tuple[float, float]:
    rows = []
    for run in runs:
        for cls, idx in _classes(run):
            pooled = pool_maps(run.maps[method][idx], DEFAULT_SIDE).numpy()
            labels = spectral_clusters(pooled.reshape(len(idx), -1), embed=False).labels
            _, pairs = pair_figures(run.data.x_val[idx], pooled, labels, _recipients(run, cls))
            for (i, j), (o, s) in pairs.items():
                rows.append((o, s, _is_mark(run, cls, idx[labels == i]) and _is_mark(run, cls, idx[labels == j])))
    if not any(r[2] for r in rows):
        return 1.0, 1.0  # nothing in the fitting half asked for a merge: never merge
    table = np.array(rows, float)
    best, best_f1 = (1.0, 1.0), -1.0
    for iou in np.linspace(0.0, 0.9, 10):
        for sim in np.linspace(-0.2, 0.9, 12):
            pred = (table[:, 0] >= iou) & (table[:, 1] >= sim)
            tp = float((pred & (table[:, 2] > 0)).sum())
            f1 = 2 * tp / (pred.sum() + (table[:, 2] > 0).sum())
            if f1 >= best_f1:  # >=: later grid points are stricter
                best, best_f1 = (float(iou), float(sim)), f1
    return best


def judge_run(run: LabRun, th: Thresholds) -> list[ClassVerdict]:
    """Every class of the run judged with ``th`` (its method); by class index."""
    out = []
    for cls, idx in _classes(run):
        v = judge_class(run.model, run.data.x_val[idx], run.maps[th.method][idx], _recipients(run, cls), cls, th)
        v.images = idx
        out.append(v)
    return out


def _rescore(verdicts: list[ClassVerdict], th: Thresholds) -> None:
    for v in verdicts:
        for c in v.clusters:
            c.score = score(c.evidence, th) if c.evidence is not None else 0.0
        v.suspicion = max((c.score for c in v.clusters), default=0.0)
        v.flagged = v.suspicion >= th.flag


def _fit_weights(runs: list[LabRun], th: Thresholds) -> Thresholds:
    xs, ys = [], []
    for run in runs:
        for v in run.verdicts[th.method]:
            for c in v.clusters:
                if c.evidence is not None:
                    xs.append([c.evidence.to_dict()[f] for f in FEATURES])
                    ys.append(_is_mark(run, v.class_index, v.images[c.members]))
    x, y = np.array(xs), np.array(ys)
    mean, scale = x.mean(axis=0), x.std(axis=0) + 1e-9
    lr = LogisticRegression(C=1.0, class_weight="balanced", max_iter=1000).fit((x - mean) / scale, y)
    w, b = lr.coef_[0], float(lr.intercept_[0])
    return replace(th, mean=dict(zip(FEATURES, mean.tolist(), strict=True)),
                   scale=dict(zip(FEATURES, scale.tolist(), strict=True)),
                   weights=dict(zip(FEATURES, w.tolist(), strict=True)), bias=b)


def _class_scores(runs: list[LabRun], method: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(suspicion, is the mark class, is a control's class) over every class of every run."""
    rows = [(v.suspicion, not r.spec.control and v.class_index == r.spec.mark_class, r.spec.control)
            for r in runs for v in r.verdicts[method]]
    a = np.array(rows, float).reshape(-1, 3)
    return a[:, 0], a[:, 1] > 0, a[:, 2] > 0


def _fit_flag(runs: list[LabRun], method: str) -> float:
    s, pos, control = _class_scores(runs, method)
    neg = control if control.any() else ~pos  # without controls: every unmarked class
    s, y = s[pos | neg], pos[pos | neg]
    cuts = np.unique(s)
    acc = np.array([((s[y] >= c).mean() + (s[~y] < c).mean()) / 2 for c in cuts])
    best = np.flatnonzero(acc == acc.max())
    lo_gap = [(cuts[i] - (cuts[i - 1] if i else 0.0), i) for i in best]
    _, i = max(lo_gap)
    return float((cuts[i] + (cuts[i - 1] if i else 0.0)) / 2)


def fit_all(runs: list[LabRun], methods: tuple[str, ...]) -> dict[str, Thresholds]:
    """Every threshold from ``runs`` per method, the best first (module docstring); the runs keep their verdicts
    per method."""
    fitted = []
    for method in methods:
        iou, sim = _merge_thresholds(runs, method)
        th = Thresholds(method=method, merge_iou=iou, merge_similarity=sim)
        for run in runs:
            run.verdicts[method] = judge_run(run, th)
        th = _fit_weights(runs, th)
        for run in runs:
            _rescore(run.verdicts[method], th)
        th = replace(th, flag=_fit_flag(runs, method))
        for run in runs:
            _rescore(run.verdicts[method], th)
        fitted.append((evaluate(runs, th, rejudge=False)["auc_vs_clean"], -methods.index(method), th))
    aucs = {t[2].method: t[0] for t in fitted}
    ordered = [t[2] for t in sorted(fitted, key=lambda t: (t[0], t[1]), reverse=True)]
    for th in ordered:
        th.fitted = {"labs": [r.spec.name for r in runs], "methods": aucs}
    return {th.method: th for th in ordered}


def _f1(members: np.ndarray, marked: np.ndarray) -> float:
    hit = int(np.isin(members, marked).sum())
    return 2 * hit / (members.size + marked.size) if members.size + marked.size else 0.0


def evaluate(runs: list[LabRun], th: Thresholds, rejudge: bool = True) -> dict:
    """The held-out figures (module docstring), per lab too."""
    for run in runs:
        if rejudge or th.method not in run.verdicts:
            run.verdicts[th.method] = judge_run(run, th)
        _rescore(run.verdicts[th.method], th)
    s, pos, clean = _class_scores(runs, th.method)
    out: dict = {"labs": []}
    out["auc_vs_clean"] = float(roc_auc_score(pos[pos | clean], s[pos | clean])) if pos.any() and clean.any() \
        else float("nan")
    out["auc_vs_unmarked"] = float(roc_auc_score(pos, s)) if pos.any() and (~pos).any() else float("nan")
    first, quiet, f1s = [], [], []
    for run in runs:
        vs = run.verdicts[th.method]
        ranked = sorted(vs, key=lambda v: (-v.suspicion, v.class_index))
        row: dict = {"lab": run.spec.name, "flagged": [v.class_index for v in ranked if v.flagged],
               "ranking": [v.class_index for v in ranked], "suspicion": [round(v.suspicion, 4) for v in ranked]}
        if run.spec.control:
            quiet.append(not row["flagged"])
        else:
            first.append(ranked[0].class_index == run.spec.mark_class)
            v = next(v for v in vs if v.class_index == run.spec.mark_class)
            marked = v.images[run.data.marked_val[v.images]]
            top = v.top
            f1 = _f1(v.images[top.members], marked) if top is not None else 0.0
            row["f1"], row["split_merge"] = f1, v.split_merge()
            f1s.append(f1)
        out["labs"].append(row)
    out["mark_class_first"] = float(np.mean(first)) if first else float("nan")
    out["clean_not_flagged"] = float(np.mean(quiet)) if quiet else float("nan")
    out["cluster_f1"] = float(np.mean(f1s)) if f1s else float("nan")
    out["n_shortcut_labs"], out["n_clean_labs"] = len(first), len(quiet)
    return out
