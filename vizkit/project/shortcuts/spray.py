"""Spectral Relevance Analysis (SpRAy, Lapuschkin et al. 2019) of one class's attribution maps.

1. Features: each map (H, W) >= 0 is summed over blocks down to ``side`` x ``side`` (area pooling, so a small mark
   keeps its mass instead of being skipped by strided sampling) and divided by its total, so a map becomes the
   *distribution* of its evidence over the image; the scale of the attribution (confidence, contrast) drops out.
   A map without positive evidence stays all zero. ``side`` is 16 by default, whatever the input size: a cell is
   1/16 of the image side (4 px at 64, 14 px at 224), so a small mark's evidence falls into one to four cells, the
   same ones in every image, while an object's evidence spreads over many cells that move with the object. On a
   32 x 32 grid of 64 px lab images the 6 px mark straddled cell borders and its members' fixedness (see
   ``clusters``) fell to 0.8-0.95; at 16 it is 1.0 for every marked image.
2. Affinity: the symmetrised k-nearest-neighbour graph of those vectors (Euclidean; ``A = (K + K^T) / 2`` with K the
   0/1 kNN connectivity, each point counted as its own first neighbour, k = ``neighbours(n)``): exactly the graph
   scikit-learn's ``SpectralClustering`` builds for ``affinity="nearest_neighbors"``.
3. Spectrum: eigenvalues ``0 = l_1 <= l_2 <= ...`` of the normalised Laplacian ``I - D^-1/2 A D^-1/2``.
   The number of clusters is ``k = argmax_{1 <= k <= k_max} (l_{k+1} - l_k)`` (the eigengap heuristic) unless
   given; ``eigengap`` is that gap, in [0, 2]. ``k_max`` is 8 and never more than one cluster per ``MIN_CLUSTER``
   (3) images of the class, a number asked for is capped the same way (50 images are never cut into 50
   singletons); ``Spectral.reason`` says which k and why. A graph made of k well-separated groups has k eigenvalues
   near 0, then a jump.
4. Labels: scikit-learn ``SpectralClustering(affinity="precomputed")`` on ``A`` (k-means on the spectral embedding,
   fixed seed), relabelled so cluster 0 is the largest.
5. Picture: t-SNE (scikit-learn, PCA init, fixed seed) of the feature vectors to 2-D.

scikit-learn runs single-threaded here (``threadpool_limits(1)``): per class the problems are small, and OpenMP
threads cost more than they save; on a loaded 2-core machine Barnes-Hut t-SNE of 200 maps took 79 s with two
threads and 2.8 s with one.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy.sparse import csgraph
from sklearn.cluster import SpectralClustering
from sklearn.manifold import TSNE
from sklearn.neighbors import kneighbors_graph
from threadpoolctl import threadpool_limits

DEFAULT_SIDE = 16
MAX_CLUSTERS = 8
MIN_CLUSTER = 3


def neighbours(n: int) -> int:
    """k of the kNN graph (self included): a tenth of the class, at most 10 (scikit-learn's default), at least 2."""
    return max(2, min(10, n // 10))


def pool_maps(maps: torch.Tensor, side: int = DEFAULT_SIDE) -> torch.Tensor:
    """(N, H, W) -> (N, s, s) block sums (s = min(side, H, W)), each divided by its total (zero maps stay zero)."""
    if maps.dim() != 3:
        raise ValueError(f"maps must be (N, H, W), got {tuple(maps.shape)}")
    s = min(side, maps.shape[-2], maps.shape[-1])
    pooled = F.adaptive_avg_pool2d(maps.float().clamp(min=0)[:, None], s)[:, 0]
    total = pooled.sum(dim=(1, 2), keepdim=True)
    return torch.where(total > 0, pooled / torch.where(total > 0, total, torch.ones_like(total)), pooled)


def affinity(features: np.ndarray, k: int | None = None) -> np.ndarray:
    """Symmetrised 0/1 kNN connectivity (N, N) as a dense float64 array (a point is its own first neighbour)."""
    n = features.shape[0]
    k = neighbours(n) if k is None else k
    if n < 2:
        return np.zeros((n, n))
    knn = kneighbors_graph(features, n_neighbors=min(k, n), mode="connectivity", include_self=True)
    dense = knn.toarray()
    return 0.5 * (dense + dense.T)


def laplacian_spectrum(a: np.ndarray) -> np.ndarray:
    """Ascending eigenvalues of the normalised graph Laplacian ``I - D^-1/2 W D^-1/2`` of ``a`` without its
    self-loops (``W = a - diag(a)``, as scipy and scikit-learn's spectral embedding do); isolated points give 0."""
    if a.shape[0] == 0:
        return np.zeros(0)
    lap = csgraph.laplacian(a, normed=True)
    return np.clip(np.linalg.eigvalsh(lap), 0.0, 2.0)


def choose_clusters(eigenvalues: np.ndarray, max_clusters: int = MAX_CLUSTERS) -> tuple[int, float]:
    """(k, gap): the k in 1..max_clusters with the largest ``l_{k+1} - l_k``; ties go to the smaller k."""
    n = eigenvalues.shape[0]
    top = min(max_clusters, n - 1)
    if top < 1:
        return 1, 0.0
    gaps = np.diff(eigenvalues[: top + 1])
    k = int(np.argmax(gaps)) + 1
    return k, float(gaps[k - 1])


def gap_at(eigenvalues: np.ndarray, k: int) -> float:
    return float(eigenvalues[k] - eigenvalues[k - 1]) if 0 < k < eigenvalues.shape[0] else 0.0


@dataclass
class Spectral:
    """One class's clustering: labels (N,) int64, 0 the largest cluster; eigenvalues (up to 32 smallest);
    k clusters; the eigengap at k; embedding (N, 2) float32 (t-SNE); ``reason``: how k was chosen, in words."""

    labels: np.ndarray
    eigenvalues: np.ndarray
    k: int
    eigengap: float
    embedding: np.ndarray
    reason: str = ""


def cluster_cap(n: int) -> int:
    """The most clusters a class of ``n`` images is split into: one per ``MIN_CLUSTER`` images (at least 1), so
    a cluster can hold enough members to be judged."""
    return max(1, n // MIN_CLUSTER)


def spectral_clusters(features: np.ndarray, n_clusters: int | None = None, *, seed: int = 0,
                      max_clusters: int = MAX_CLUSTERS, embed: bool = True) -> Spectral:
    """SpRAy on (N, D) feature vectors (``pool_maps`` flattened); ``n_clusters`` None = eigengap heuristic.
    scikit-learn's warnings never reach the caller: what they would say is in ``reason``."""
    with threadpool_limits(limits=1), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a disconnected graph is expected (a shortcut cluster is its own component)
        return _spectral_clusters(features, n_clusters, seed, max_clusters, embed)


def _spectral_clusters(features: np.ndarray, n_clusters: int | None, seed: int, max_clusters: int,
                       embed: bool) -> Spectral:
    n = features.shape[0]
    a = affinity(features)
    eigenvalues = laplacian_spectrum(a)
    cap = cluster_cap(n)
    if n_clusters is None:
        k, gap = choose_clusters(eigenvalues, min(max_clusters, cap))
        reason = (f"k={k} from the eigengap: the largest gap l{k + 1} - l{k} = {gap:.3f} among k <= "
                  f"{min(max_clusters, cap, max(n - 1, 1))}")
    else:
        k = max(1, min(int(n_clusters), cap))
        gap = gap_at(eigenvalues, k)
        reason = f"k={k} as asked" if k == n_clusters else \
            f"k={k}: --clusters {n_clusters} capped at {n} images / {MIN_CLUSTER} per cluster"
    labels = np.zeros(n, np.int64)
    if k > 1:
        model = SpectralClustering(n_clusters=k, affinity="precomputed", random_state=seed, assign_labels="kmeans",
                                   n_init=10)
        labels = _by_size(model.fit_predict(a))
        found = int(labels.max()) + 1
        if found < k:
            reason += f"; k-means found only {found} distinct clusters"
            k = found
    emb = tsne(features, seed) if embed else np.zeros((n, 2), np.float32)
    return Spectral(labels, eigenvalues[:32].astype(np.float64), k, gap, emb, reason)


def _by_size(labels: np.ndarray) -> np.ndarray:
    """Relabel 0..k-1 by decreasing size (ties: smaller original label first)."""
    ids, counts = np.unique(labels, return_counts=True)
    order = ids[np.lexsort((ids, -counts))]
    remap = np.empty(int(ids.max()) + 1, np.int64)
    remap[order] = np.arange(order.size)
    return remap[labels]


def tsne(features: np.ndarray, seed: int = 0) -> np.ndarray:
    """(N, 2) t-SNE embedding; perplexity min(30, (N - 1) / 3); tiny classes are laid on a line."""
    n = features.shape[0]
    if n < 4:
        return np.stack([np.arange(n, dtype=np.float32), np.zeros(n, np.float32)], axis=1)
    perplexity = min(30.0, (n - 1) / 3.0)
    emb = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(
        features.astype(np.float64))
    return emb.astype(np.float32)


__all__ = ["DEFAULT_SIDE", "MAX_CLUSTERS", "MIN_CLUSTER", "Spectral", "affinity", "choose_clusters", "cluster_cap",
           "gap_at", "laplacian_spectrum", "neighbours", "pool_maps", "spectral_clusters", "tsne"]
