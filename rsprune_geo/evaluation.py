"""Baselines and metrics, so anyone can compare selections: balance, coverage, Fréchet, junk."""

from __future__ import annotations

import numpy as np
import pandas as pd

from .clustering import SceneCentroids, assign_to_centroids, normalise, self_clusters
from .selection import select_tiles


def label_balance(labels: np.ndarray, n_classes: int) -> float:
    """Normalised entropy (0–1) of the label distribution: 1 when every class is equally present."""
    labels = np.asarray(labels)
    if labels.size == 0 or n_classes <= 1:
        return 0.0
    _, counts = np.unique(labels, return_counts=True)
    p = counts / counts.sum()
    return float(-(p * np.log(p)).sum() / np.log(n_classes))


def coverage(full: np.ndarray, kept: np.ndarray, k: int = 5, max_full: int = 20000, seed: int = 0) -> float:
    """Coverage (Naeem et al. 2020): the share of the full set whose nearest kept sample lies
    within its own k-NN radius in the full set (cosine distance). 1 = the kept set spans it."""
    import faiss

    full = normalise(full)
    kept = normalise(kept)
    if kept.shape[0] == 0 or full.shape[0] <= k:
        return 0.0
    if full.shape[0] > max_full:
        full = full[np.sort(np.random.default_rng(seed).choice(full.shape[0], max_full, replace=False))]
    index = faiss.IndexFlatIP(full.shape[1])
    index.add(full)
    sims, _ = index.search(full, k + 1)  # the first hit is the point itself
    radius = 1.0 - sims[:, k]
    kept_index = faiss.IndexFlatIP(kept.shape[1])
    kept_index.add(kept)
    nearest, _ = kept_index.search(full, 1)
    return float(np.mean(1.0 - nearest[:, 0] <= radius + 1e-6))


def frechet_distance(a: np.ndarray, b: np.ndarray, dims: int = 64) -> float:
    """Fréchet distance between Gaussians fitted to two embedding sets, in the top ``dims``
    principal axes of ``a`` (stable with few samples). Lower = the kept set looks like the full one."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape[0] < 2 or b.shape[0] < 2:
        return float("nan")
    mean = a.mean(axis=0)
    _, _, vt = np.linalg.svd(a - mean, full_matrices=False)
    basis = vt[: min(dims, vt.shape[0])].T
    pa, pb = (a - mean) @ basis, (b - mean) @ basis
    mu_a, mu_b = pa.mean(axis=0), pb.mean(axis=0)
    cov_a, cov_b = np.cov(pa, rowvar=False), np.cov(pb, rowvar=False)
    eig = np.linalg.eigvals(cov_a @ cov_b)
    trace_sqrt = np.sqrt(np.clip(eig.real, 0, None)).sum()
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a) + np.trace(cov_b) - 2 * trace_sqrt)


def metrics(
    kept: np.ndarray, embeddings: np.ndarray, scenes: np.ndarray, n_classes: int,
    full: np.ndarray, junk: np.ndarray | None = None, seed: int = 0,
) -> dict:
    """The metrics of one selection (a boolean mask over all tiles)."""
    kept = np.asarray(kept, dtype=bool)
    row = {
        "kept": int(kept.sum()),
        "classes_kept": int(np.unique(scenes[kept & full]).size) if (kept & full).any() else 0,
        "label_balance": label_balance(scenes[kept & full], n_classes),
        "coverage": coverage(embeddings[full], embeddings[kept & full], seed=seed),
        "frechet": frechet_distance(embeddings[full], embeddings[kept & full]),
    }
    if junk is not None:
        row["junk_kept"] = float((kept & junk).sum() / max(kept.sum(), 1))
    return row


def compare_methods(
    embeddings: np.ndarray,
    entropy: np.ndarray,
    entropy_rank: np.ndarray,
    candidates: np.ndarray,
    centroids: SceneCentroids,
    budget: int,
    rs_prune_kept: np.ndarray,
    full: np.ndarray,
    junk: np.ndarray | None = None,
    uniformity: float = 1.0,
    seed: int = 0,
) -> pd.DataFrame:
    """Random, entropy-only, self-clustering, proportional quotas and RS-Prune on the same
    budget, measured on the same embeddings. ``candidates`` are stage 1's survivors,
    ``entropy_rank`` stage 1's ranking (0 = not ranked), ``full`` the tiles the metrics
    describe (e.g. all tiles not dropped for nodata), ``junk`` planted junk if known."""
    n = embeddings.shape[0]
    scene_ids, _ = assign_to_centroids(embeddings, centroids)
    scenes = centroids.labels[scene_ids]
    n_classes = len(set(centroids.labels.tolist()))
    rng = np.random.default_rng(seed)
    selections: dict[str, np.ndarray] = {}

    random_keep = np.zeros(n, dtype=bool)
    random_keep[rng.choice(n, min(budget, n), replace=False)] = True
    selections["random"] = random_keep
    selections["entropy only"] = (entropy_rank >= 1) & (entropy_rank <= budget)

    cand = np.flatnonzero(candidates)
    _, self_ids, self_dist = self_clusters(embeddings[cand], centroids, k=len(centroids), seed=seed)
    mask = np.zeros(n, dtype=bool)
    mask[cand[select_tiles(self_ids, self_dist, budget, uniformity, seed=seed).kept]] = True
    selections["self-clustering"] = mask

    ids, dist = assign_to_centroids(embeddings[cand], centroids)
    mask = np.zeros(n, dtype=bool)
    mask[cand[select_tiles(ids, dist, budget, 0.0, seed=seed).kept]] = True
    selections["proportional quotas"] = mask
    selections["rs-prune"] = np.asarray(rs_prune_kept, dtype=bool)

    rows = {name: metrics(kept, embeddings, scenes, n_classes, full, junk, seed)
            for name, kept in selections.items()}
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index.name = "method"
    return table
