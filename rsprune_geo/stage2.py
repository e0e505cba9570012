"""Stage 2 as one step of a run: embed, anchor on the prior bank, cluster, select."""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd

from .clustering import SceneCentroids, assign_to_centroids, fit_scene_centroids, self_clusters
from .features import encoder_input_size, get_encoder
from .features.cache import EmbeddingCache, atomic_save_npz, default_cache_dir, load_npz
from .features.extract import embed_tiles
from .information import STATUS_KEPT, STATUS_LOW_INFORMATION, stratified_entropy_cut, within_scene_cut_reasons
from .priorbank import PriorBank, find_prior_bank, load_images
from .selection import find_duplicates, select_tiles

STATUS_NOT_SELECTED = "not_selected"
STATUS_DUPLICATE = "duplicate"

#: Prior-bank images used to draw empirical RCF filters (a seeded sample).
RCF_FIT_IMAGES = 1000


def bank_encoder(name: str, bank_paths: list[str], weights: str | None = None, seed: int = 0,
                 device: str | None = None):
    """The encoder ``name``; ``rcf-empirical`` draws its filters from a seeded sample of the bank."""
    fit_images = None
    if name == "rcf-empirical":
        rng = np.random.default_rng(seed)
        pick = np.sort(rng.choice(len(bank_paths), min(RCF_FIT_IMAGES, len(bank_paths)), replace=False))
        fit_images = load_images([bank_paths[i] for i in pick], encoder_input_size(name))
    return get_encoder(name, weights, fit_images, seed, device)


def embed_bank(bank: PriorBank, encoder, cache_root: Path, progress: bool = True) -> np.ndarray:
    """The prior bank's embeddings, cached per encoder and bank fingerprint."""
    from tqdm.auto import tqdm

    path = cache_root / "banks" / encoder.cache_key / f"{bank.fingerprint}.npz"
    cached = load_npz(path) if path.exists() else None
    if cached is not None and cached["vectors"].shape == (len(bank), encoder.dim):
        return cached["vectors"]
    vectors = np.zeros((len(bank), encoder.dim), dtype=np.float32)
    step = max(encoder.batch_size, 32)
    for start in tqdm(range(0, len(bank), step), desc=f"prior bank ({encoder.name})", unit="batch",
                      disable=not progress, leave=False):
        images = load_images(bank.paths[start : start + step], encoder.input_size)
        vectors[start : start + len(images)] = encoder.encode(images)
    atomic_save_npz(path, vectors=vectors)
    return vectors


def bank_centroids(bank: PriorBank, encoder, config, cache_root: Path, progress: bool = True) -> SceneCentroids:
    """Scene centroids of the bank for this encoder and K, saved so many runs share them."""
    key = f"{bank.fingerprint}-kpc{config.k_per_class}-ipc{config.images_per_centroid}-k{config.k}-n{config.bank_samples}-s{config.seed}"
    path = cache_root / "centroids" / encoder.cache_key / f"{key}.npz"
    if path.exists():
        try:
            return SceneCentroids.load(path)
        except Exception:
            path.unlink(missing_ok=True)
    vectors = embed_bank(bank, encoder, cache_root, progress)
    centroids = fit_scene_centroids(vectors, bank.labels, k_per_class=config.k_per_class, k=config.k,
                                    samples_per_class=config.bank_samples, seed=config.seed,
                                    images_per_centroid=config.images_per_centroid)
    path.parent.mkdir(parents=True, exist_ok=True)
    centroids.save(path)
    return centroids


def _assign(cand_vectors, centroids, config):
    """Cluster ids and centroid distances of the candidates, and the clusters used."""
    if config.clustering == "self":
        clusters_used, ids, dist = self_clusters(cand_vectors, centroids, k=len(centroids), seed=config.seed)
    else:
        clusters_used = centroids
        ids, dist = assign_to_centroids(cand_vectors, centroids)
    return clusters_used, ids, dist


def _select(ids, dist, pool_vectors, clusters_used, config, budget):
    """Mark near-duplicates in the pool, then select the budget among the rest."""
    duplicate = np.zeros(ids.size, dtype=bool)
    if config.dedup is not None:
        from .selection import centroid_first_order

        order = centroid_first_order(ids, dist, config.spread, config.seed)
        duplicate = find_duplicates(pool_vectors, ids, order, config.dedup)
    fresh = np.flatnonzero(~duplicate)
    scenes = clusters_used.labels if config.quota_by == "scene" else None
    selection = select_tiles(ids[fresh], dist[fresh], budget, config.uniformity, config.spread, config.seed,
                             cluster_scenes=scenes)
    return duplicate, fresh, selection


def run_stage2(tiles: gpd.GeoDataFrame, sources, scalings, config, budget: int, timings: dict,
               progress: bool = True, client=None, on_progress=None, stage1_count: int | None = None,
               bank: PriorBank | None = None):
    """Stage 2 on the tiles stage 1 passed: returns (tiles, clusters table, evaluation, record).

    With the ``bank`` stage-1 rule, stage 1's cut (``stage1_count`` tiles, or the budget when
    larger) is taken here, within each candidate's nearest scene, before selection.
    """
    t0 = time.perf_counter()
    cache_root = Path(config.cache_dir) if config.cache_dir else default_cache_dir()
    bank = bank or find_prior_bank(config.prior_bank)
    encoder = bank_encoder(config.encoder, bank.paths, config.weights, config.seed, config.device)
    if config.batch_size:
        encoder.batch_size = config.batch_size
    if on_progress is not None:
        on_progress("prior_bank", 0, len(bank))
    centroids = bank_centroids(bank, encoder, config, cache_root, progress)
    timings["stage2_prior_bank"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    survivors = (tiles["status"] == STATUS_KEPT).to_numpy()
    embed_mask = np.ones(len(tiles), dtype=bool) if config.evaluate else survivors
    by_path = {s.path: s for s in sources}
    scale_by_path = {s.path: sc for s, sc in zip(sources, scalings)}
    cache = EmbeddingCache(cache_root, encoder.cache_key)
    embedded = np.flatnonzero(embed_mask)
    scratch = cache_root / "scratch"
    scratch.mkdir(parents=True, exist_ok=True)
    fd, scratch_file = tempfile.mkstemp(prefix="run-", suffix=".npy", dir=scratch)
    os.close(fd)
    by_stratum = config.stage1_rule == "bank"
    try:
        # the embeddings of this run live in a memory-mapped file: memory stays at one batch
        vectors = np.lib.format.open_memmap(scratch_file, mode="w+", dtype=np.float32,
                                            shape=(embedded.size, encoder.dim))
        if on_progress is not None:
            on_progress("encoding", 0, int(embedded.size))
        embed_tiles(tiles.iloc[embedded], by_path, scale_by_path, encoder, cache, progress, client,
                    out=vectors, on_progress=on_progress)
        timings["stage2_encoding"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        cand = np.flatnonzero(survivors)
        cand_vectors = vectors if embedded.size == cand.size else vectors[np.searchsorted(embedded, cand)]
        clusters_used, ids, dist = _assign(cand_vectors, centroids, config)
        scene_rank = np.zeros(cand.size, dtype=np.int64)
        passed = np.ones(cand.size, dtype=bool)
        stage1_quota = None
        if by_stratum:
            count = max(int(stage1_count if stage1_count is not None else cand.size), int(budget))
            passed, scene_rank, stage1_quota = stratified_entropy_cut(
                tiles["entropy"].to_numpy()[cand], clusters_used.labels[ids], count,
                tiles["tile_id"].to_numpy()[cand])
        pool = np.flatnonzero(passed)  # positions in cand
        stage1_decides = budget >= pool.size
        if stage1_decides:
            duplicate = np.zeros(pool.size, dtype=bool)
            fresh = np.arange(pool.size)
            selection = select_tiles(ids[pool], dist[pool], pool.size, config.uniformity, config.spread,
                                     config.seed)
        else:
            duplicate, fresh, selection = _select(ids[pool], dist[pool], cand_vectors[pool], clusters_used,
                                                  config, budget)
        all_assignment = assign_to_centroids(vectors, clusters_used) if config.evaluate else None
        evaluation = None
        final_kept = np.zeros(len(tiles), dtype=bool)
        final_kept[cand[pool[fresh[selection.kept]]]] = True
        if config.evaluate:
            from .evaluation import evaluate_run

            t1 = time.perf_counter()
            t_eval = time.perf_counter()
            evaluation = evaluate_run(tiles, np.asarray(vectors), embedded, final_kept, survivors,
                                      centroids, config, budget, stage1_count, sources, scalings,
                                      cache_root, progress, pool=cand[pool], pool_ids=ids[pool],
                                      pool_dist=dist[pool])
            timings["evaluation"] = time.perf_counter() - t1
            t0 += time.perf_counter() - t_eval  # selection's time excludes the evaluation
    finally:
        vectors = cand_vectors = None
        os.unlink(scratch_file)

    out = tiles.copy()
    cluster_col = np.full(len(tiles), -1, dtype=np.int64)
    scene_col = np.full(len(tiles), "", dtype=object)
    dist_col = np.full(len(tiles), np.nan)
    rank_col = np.full(len(tiles), -1, dtype=np.int64)
    scene_rank_col = np.zeros(len(tiles), dtype=np.int64)
    if all_assignment is not None:  # every tile has an embedding: give each its nearest scene
        all_ids, all_dist = all_assignment
        cluster_col[embedded], dist_col[embedded] = all_ids, all_dist
        scene_col[embedded] = clusters_used.labels[all_ids]
    cluster_col[cand], dist_col[cand] = ids, dist
    scene_col[cand] = clusters_used.labels[ids]
    scene_rank_col[cand] = scene_rank
    in_pool = cand[pool]
    rank_col[in_pool[fresh]] = selection.rank
    status = out["status"].to_numpy(dtype=object).copy()
    reason = out["reason"].to_numpy(dtype=object).copy()
    cut = cand[~passed]
    status[cut] = STATUS_LOW_INFORMATION
    if cut.size:
        reason[cut] = within_scene_cut_reasons(tiles["entropy"].to_numpy()[cut], scene_col[cut],
                                               stage1_quota[~passed])
    status[in_pool] = STATUS_NOT_SELECTED
    reason[in_pool] = ""
    status[in_pool[duplicate]] = STATUS_DUPLICATE
    reason[in_pool[duplicate]] = f"near-duplicate (cosine >= {config.dedup}) of a tile nearer its centroid"
    status[in_pool[fresh[selection.kept]]] = STATUS_KEPT
    not_sel = in_pool[fresh[~selection.kept]]
    quota_of = dict(zip(selection.clusters.tolist(), selection.quotas.tolist()))
    reason[not_sel] = [f"beyond the quota of cluster {c} ({quota_of[c]})" for c in cluster_col[not_sel]]
    out["cluster"] = cluster_col
    out["scene"] = scene_col
    out["centroid_distance"] = dist_col
    out["cluster_rank"] = rank_col
    out["scene_entropy_rank"] = scene_rank_col
    out["status"] = status
    out["reason"] = reason
    geometry = out.pop("geometry")
    out = gpd.GeoDataFrame(out, geometry=geometry.values, crs=tiles.crs)

    k_all = len(clusters_used)
    pool_ids = ids[pool]
    size = np.bincount(pool_ids, minlength=k_all)
    quotas = np.zeros(k_all, dtype=np.int64)
    quotas[selection.clusters] = selection.quotas
    clusters = pd.DataFrame({
        "cluster": np.arange(k_all),
        "scene": clusters_used.labels,
        "purity": clusters_used.purity,
        "bank_members": clusters_used.members,
        "size": size,
        "duplicates": np.bincount(pool_ids[duplicate], minlength=k_all),
        "quota": quotas,
        "kept": np.bincount(pool_ids[fresh[selection.kept]], minlength=k_all),
    })
    timings["stage2_selection"] = time.perf_counter() - t0

    record = {
        "encoder": encoder.name,
        "encoder_key": encoder.cache_key,
        "weights": config.weights,
        "prior_bank": bank.roots,
        "prior_bank_fingerprint": bank.fingerprint,
        "prior_bank_images": len(bank),
        "n_classes": len(bank.classes),
        "n_centroids": len(centroids),
        "bank_images_per_class": bank.class_counts(),
        "bank_samples": config.bank_samples,
        "bank_gsd": bank.gsd,
        "centroids_per_class": {str(c): int(n) for c, n in zip(*np.unique(centroids.labels, return_counts=True))},
        "k_per_class": config.k_per_class,
        "images_per_centroid": config.images_per_centroid,
        "k": config.k,
        "clustering": config.clustering,
        "stage1_rule": config.stage1_rule,
        "stage1_candidates": int(cand.size),
        "stage1_passed": int(pool.size),
        "stage1_decides": bool(stage1_decides),
        "quota_by": config.quota_by,
        "uniformity": config.uniformity,
        "spread": config.spread,
        "dedup": config.dedup,
        "budget": int(budget),
        "kept": int(selection.kept.sum()),
        "cache_dir": str(cache_root),
        "seed": config.seed,
    }
    return out, clusters, evaluation, record
