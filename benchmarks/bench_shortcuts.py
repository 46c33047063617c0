"""``vizkit shortcuts`` on 1,000 lab images: maps and SpRAy time, and CoRelAy's SpRAy pipeline on the same maps.

    pip install corelay                              # optional reference (pulls h5py, metrohash-python)
    python benchmarks/bench_shortcuts.py [--data DIR] [--model labnet] [--weights W] [--threads 2] [--limit 1000]

DATA defaults to the test split of a fresh ``vizkit lab make`` (200 images per class, 1,000 in all). Timed:

- maps: every image's input-level map (gradient x input, batches of 32) and its pooling to the SpRAy grid;
- SpRAy: per class, the kNN graph, the normalised-Laplacian spectrum, the eigengap, spectral clustering and the
  cluster statistics (``embed=False``), then the t-SNE embedding separately;
- CoRelAy (where it installs): ``corelay.pipeline.spectral.SpectralClustering`` with its defaults (Euclidean
  distances, 10-nearest-neighbour affinity, symmetric normalised Laplacian, 32 eigenvectors) and k-means with the
  number of clusters vizkit's eigengap chose (at least 2), on the *same* pooled maps; agreement = adjusted Rand
  index between its labels and vizkit's spectral labels before the carrier split / same-place merge (like with
  like), and after. Where DATA's parent holds a ``lab.json``, also the best F1 of any cluster against the marked
  images, for each of the three labelings.

The machine may be shared with other jobs: compare only numbers from the same run.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from _machine import machine
from sklearn.metrics import adjusted_rand_score

from vizkit.jobs.context import RunContext
from vizkit.jobs.shortcuts import ShortcutsConfig, shortcuts_result
from vizkit.load import load_model
from vizkit.load.dataset import list_images
from vizkit.project.shortcuts.spray import spectral_clusters


def make_lab_test_split(root: Path, per_class: int) -> Path:
    from vizkit.lab.dataset import LabSpec, make_lab

    make_lab(LabSpec(per_class={"train": 1, "val": 1, "test": per_class}), root)
    return root / "test"


def corelay_labels(features: np.ndarray, k: int) -> tuple[np.ndarray, float]:
    from corelay.pipeline.spectral import SpectralClustering
    from corelay.processor.clustering import KMeans

    start = time.perf_counter()
    pipeline = SpectralClustering(clustering=KMeans(n_clusters=k, is_output=True))
    _, labels = pipeline(features)
    return np.asarray(labels).ravel(), time.perf_counter() - start


def best_f1(labels: np.ndarray, truth: np.ndarray) -> float:
    """Best F1 of any cluster against the boolean ``truth`` (0 when nothing is marked)."""
    if not truth.any():
        return 0.0
    return max(2 * float((labels == c)[truth].sum()) / float((labels == c).sum() + truth.sum())
               for c in np.unique(labels))


def marked_mask(data: Path, paths: list[str]) -> np.ndarray | None:
    import json

    lab = data.parent / "lab.json"
    if not lab.is_file():
        return None
    marked = {str(data.parent / p) for p in json.loads(lab.read_text()).get("marked_images", [])}
    return np.array([p in marked for p in paths])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=None)
    parser.add_argument("--model", default="labnet")
    parser.add_argument("--weights", default=None)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--limit", type=int, default=1000)
    parser.add_argument("--per-class", type=int, default=200)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    tmp = tempfile.TemporaryDirectory()
    data = Path(args.data) if args.data else make_lab_test_split(Path(tmp.name) / "lab", args.per_class)
    loaded = load_model(args.model, args.weights)
    images = list_images(data, args.limit)
    print(f"machine: {machine('scikit-learn', 'corelay')}")
    print(f"data: {data} ({len(images.paths)} images), model {args.model}")
    timings: dict[str, float] = {}
    config = ShortcutsConfig(data=data, model=args.model, embed=False, batch_size=32)
    result = shortcuts_result(RunContext.from_loaded(loaded), images, config, timings=timings)
    start = time.perf_counter()
    for a in result.classes:
        spectral_clusters(result.pooled[a.images].reshape(a.images.size, -1), embed=True)
    tsne = time.perf_counter() - start
    n = int((result.explained >= 0).sum())
    print(f"maps: {timings['maps']:.2f} s ({1000 * timings['maps'] / n:.1f} ms/image); "
          f"verdict (SpRAy, merge, evidence): {timings['verdict']:.2f} s; t-SNE (all classes): {tsne:.2f} s")
    for a in result.classes:
        print(f"  class {a.class_index} {a.name}: {a.images.size} images, k={a.spectral.k}, eigengap "
              f"{a.spectral.eigengap:.3f}, suspicion {a.suspicion:.4f}, clusters {[c.members.size for c in a.clusters]}"
              f"{' FLAGGED' if a.flagged else ''}")
    try:
        import corelay  # noqa: F401
    except ImportError:
        print("corelay not installed: no comparison")
        return
    ours_time = theirs_time = 0.0
    truth = marked_mask(data, result.paths)
    merged = result.cluster
    for a in result.classes:
        refined = merged[a.images]
        features = result.pooled[a.images].reshape(a.images.size, -1).astype(np.float64)
        k = max(a.spectral.k, 2)
        start = time.perf_counter()
        ours = spectral_clusters(features, k, embed=False).labels
        ours_time += time.perf_counter() - start
        theirs, seconds = corelay_labels(features, k)
        theirs_time += seconds
        print(f"  class {a.class_index}: k={k}, ARI(vizkit spectral, CoRelAy) = {adjusted_rand_score(ours, theirs):.3f}"
              f", ARI(vizkit refined, CoRelAy) = {adjusted_rand_score(refined, theirs):.3f}")
        if truth is not None and truth[a.images].any():
            t = truth[a.images]
            print(f"    best F1 vs lab.json: vizkit spectral {best_f1(ours, t):.3f}, vizkit refined "
                  f"{best_f1(refined, t):.3f}, CoRelAy {best_f1(theirs, t):.3f}")
    print(f"clustering only, same k: vizkit {ours_time:.2f} s, CoRelAy {theirs_time:.2f} s "
          f"(ratio {theirs_time / max(ours_time, 1e-9):.2f})")


if __name__ == "__main__":
    main()
