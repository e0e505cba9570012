"""Stage 2 as one step of a run: embed, anchor on the prior bank, cluster, select."""

from __future__ import annotations

import logging
import os
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
from rasterio.windows import Window

from ..config import DEFAULT_ENCODER, RunConfig
from ..features import Encoder, encoder_info, get_encoder
from ..features.cache import EmbeddingCache, atomic_save_npz, default_cache_dir, load_npz
from ..features.runtime import onnxruntime_version
from ..progress import ProgressCallback, no_progress
from ..reading.pixels import Scaling, read_images
from ..reading.sources import RasterSource
from ..schema import Status
from .clustering import SceneCentroids, assign_to_centroids, fit_scene_centroids, self_clusters
from .embedding import embed_tiles, encode_windows, pending_batches, read_ahead
from .priorbank import PriorBank
from .selection import SelectionOptions, apply_selection, centroid_first_order, find_duplicates

log = logging.getLogger(__name__)

#: Prior-bank images used to draw empirical RCF filters (a seeded sample).
RCF_FIT_IMAGES = 1000


@dataclass(frozen=True)
class Stage2Options:
    """What stage 2 needs of a run's parameters (see :class:`~rsprune_geo.config.RunConfig`)."""

    prior_bank: tuple[str, ...]
    encoder: str = DEFAULT_ENCODER
    weights: str | None = None
    k_per_class: int | None = 4
    images_per_centroid: int = 10
    k: int | None = None
    bank_samples: int | None = None
    clustering: str = "prior"
    selection: SelectionOptions = field(default_factory=SelectionOptions)
    stage1_rule: str = "bank"
    cache_dir: str | None = None
    device: str | None = None
    runtime: str = "auto"
    batch_size: int | None = None
    evaluate: bool = False
    labels: str | None = None
    label_column: str = "label"
    eval_encoder: str | None = None

    @classmethod
    def from_config(cls, config: RunConfig) -> Stage2Options:
        """Stage 2's options of a run."""
        return cls(
            prior_bank=tuple(config.prior_bank), encoder=config.encoder, weights=config.weights,
            k_per_class=config.k_per_class, images_per_centroid=config.images_per_centroid, k=config.k,
            bank_samples=config.bank_samples, clustering=config.clustering,
            selection=SelectionOptions(config.uniformity, config.spread, config.seed, config.quota_by,
                                       config.dedup, config.max_per_cell, config.cell_period, config.geo_spread),
            stage1_rule=config.stage1_rule, cache_dir=config.cache_dir, device=config.device, runtime=config.runtime,
            batch_size=config.batch_size, evaluate=config.evaluate, labels=config.labels,
            label_column=config.label_column, eval_encoder=config.eval_encoder,
        )

    @property
    def seed(self) -> int:
        """The run's seed."""
        return self.selection.seed

    @property
    def needs_vectors(self) -> bool:
        """Whether the run needs the embeddings themselves (near-duplicates, self-clustering, the
        evaluation); otherwise each tile's nearest centroid is all that leaves the encoder."""
        return self.evaluate or self.selection.dedup is not None or self.clustering == "self"

    @property
    def cache_root(self) -> Path:
        """The embedding and centroid cache folder."""
        return Path(self.cache_dir) if self.cache_dir else default_cache_dir()


@dataclass
class Stage2Result:
    """What stage 2 gives a run: the tiles with their stage-2 columns and decisions, the
    ``clusters`` table, the evaluation table (with ``evaluate``) and the ``stage2`` record."""

    tiles: gpd.GeoDataFrame
    clusters: pd.DataFrame
    evaluation: pd.DataFrame | None
    record: dict[str, Any]
    timings: dict[str, float] = field(default_factory=dict)


def bank_encoder(name: str, bank_paths: list[str], weights: str | None = None, seed: int = 0,
                 device: str | None = None, runtime: str = "auto", cache_dir: str | None = None) -> Encoder:
    """The encoder ``name``; one that fits on the bank (``rcf-empirical``) draws a seeded
    sample of the bank's images, and one whose int8 variant keeps its accuracy is calibrated on
    another (``CALIBRATION_IMAGES`` of them) when it runs on onnxruntime."""
    from ..features.runtime import CALIBRATION_IMAGES, Calibration

    info = encoder_info(name)
    rng = np.random.default_rng(seed)

    def sample(n: int) -> list[str]:
        pick = np.sort(rng.choice(len(bank_paths), min(n, len(bank_paths)), replace=False))
        return [bank_paths[i] for i in pick]

    fit_images = read_images(sample(RCF_FIT_IMAGES), info.input_size) if info.needs_bank else None
    calibration = None
    if info.int8 and runtime in ("auto", "onnx-int8"):
        # read only when the int8 file must be made; named by the files, so a cached one is reused
        paths = sample(CALIBRATION_IMAGES)
        key = f"{info.input_size}:" + "\n".join(f"{p}:{os.stat(p).st_size}:{os.stat(p).st_mtime_ns}" for p in paths)
        calibration = Calibration(key, lambda: read_images(paths, info.input_size))
    return get_encoder(name, weights, fit_images, seed, device, runtime, cache_dir, calibration)


def embed_bank(bank: PriorBank, encoder: Encoder, cache_root: Path,
               on_progress: ProgressCallback = no_progress) -> np.ndarray:
    """The prior bank's embeddings, cached per encoder and bank fingerprint."""
    path = cache_root / "banks" / encoder.cache_key / f"{bank.fingerprint}.npz"
    cached = load_npz(path) if path.exists() else None
    if cached is not None and cached["vectors"].shape == (len(bank), encoder.dim):
        return cached["vectors"]
    vectors = np.zeros((len(bank), encoder.dim), dtype=np.float32)
    step = max(encoder.batch_size, 32)
    for start in range(0, len(bank), step):
        images = read_images(bank.paths[start : start + step], encoder.input_size)
        vectors[start : start + len(images)] = encoder.encode(images)
        on_progress("prior_bank", start + len(images), len(bank))
    atomic_save_npz(path, vectors=vectors)
    return vectors


def bank_centroids(bank: PriorBank, encoder: Encoder, options: Stage2Options,
                   on_progress: ProgressCallback = no_progress) -> SceneCentroids:
    """Scene centroids of the bank for this encoder and K, saved so many runs share them."""
    key = (f"{bank.fingerprint}-kpc{options.k_per_class}-ipc{options.images_per_centroid}-k{options.k}"
           f"-n{options.bank_samples}-s{options.seed}")
    path = options.cache_root / "centroids" / encoder.cache_key / f"{key}.npz"
    if path.exists():
        try:
            return SceneCentroids.load(path)
        except Exception:
            path.unlink(missing_ok=True)
    vectors = embed_bank(bank, encoder, options.cache_root, on_progress)
    centroids = fit_scene_centroids(vectors, bank.labels, k_per_class=options.k_per_class, k=options.k,
                                    samples_per_class=options.bank_samples, seed=options.seed,
                                    images_per_centroid=options.images_per_centroid)
    path.parent.mkdir(parents=True, exist_ok=True)
    centroids.save(path)
    return centroids


def encode_and_assign(source: RasterSource, windows: list[Window], scaling: Scaling, tile_ids: list[str],
                      cache_root: str | None, encoder: Encoder,
                      centroids: SceneCentroids) -> tuple[np.ndarray, np.ndarray]:
    """Read, encode, cache and assign one batch where it runs (a Dask worker): only the nearest
    centroid ids and distances travel back."""
    vectors = encode_windows(source, windows, scaling, encoder)
    if cache_root is not None:
        EmbeddingCache(cache_root, encoder.cache_key).store(source.fingerprint, tile_ids, vectors)
    return assign_to_centroids(vectors, centroids)


def embed_and_assign(
    tiles: pd.DataFrame,
    sources: Mapping[str, RasterSource],
    scalings: Mapping[str, Scaling],
    encoder: Encoder,
    centroids: SceneCentroids,
    cache: EmbeddingCache | None = None,
    client: Any | None = None,
    on_progress: ProgressCallback | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The nearest centroid (ids, cosine distances) of every tile, without gathering embeddings.

    Cached vectors are assigned shard by shard; the rest are encoded, cached and assigned batch
    by batch where they are encoded (on a Dask client's workers, against centroids sent to each
    worker once), so neither the driver's memory nor its disk grows with the embeddings.
    """
    from ..scaleout import map_tasks

    ids = np.full(len(tiles), -1, dtype=np.int64)
    dist = np.full(len(tiles), np.nan, dtype=np.float32)

    def assign_cached(positions: np.ndarray, dst: np.ndarray, vectors: np.ndarray) -> None:
        ids[positions[dst]], dist[positions[dst]] = assign_to_centroids(vectors, centroids)

    batches = pending_batches(tiles, sources, encoder, cache, assign_cached)
    total = sum(b[1].size for b in batches)
    cache_root = str(cache.root) if cache is not None else None
    tasks = [(sources[path], windows, scalings[path], tile_ids, cache_root)
             for path, _, tile_ids, windows in batches]
    if client is not None:
        results: Iterator[tuple[int, tuple[np.ndarray, np.ndarray]]] = map_tasks(
            encode_and_assign, tasks, client, broadcast={"encoder": encoder, "centroids": centroids})
    else:
        results = ((i, _store_and_assign(vectors, tasks[i], encoder, cache, centroids))
                   for i, vectors in read_ahead([t[:3] for t in tasks], encoder))
    done = 0
    for i, (batch_ids, batch_dist) in results:
        batch = batches[i][1]
        ids[batch], dist[batch] = batch_ids, batch_dist
        done += batch.size
        if on_progress is not None:
            on_progress("encoding", done, total)
    return ids, dist


def _store_and_assign(vectors: np.ndarray, task: tuple, encoder: Encoder, cache: EmbeddingCache | None,
                      centroids: SceneCentroids) -> tuple[np.ndarray, np.ndarray]:
    source, _, _, tile_ids, _ = task
    if cache is not None:
        cache.store(source.fingerprint, tile_ids, vectors)
    return assign_to_centroids(vectors, centroids)


def run_stage2(
    tiles: gpd.GeoDataFrame,
    sources: Sequence[RasterSource],
    scalings: Sequence[Scaling],
    options: Stage2Options,
    budget: int,
    stage1_count: int | None = None,
    bank: PriorBank | None = None,
    client: Any | None = None,
    on_progress: ProgressCallback = no_progress,
) -> Stage2Result:
    """Stage 2 on the tiles stage 1 passed (status ``kept``): keep ``budget`` of them.

    With the ``bank`` stage-1 rule, stage 1's cut (``stage1_count`` tiles, or the budget when
    larger) is taken here, within each candidate's nearest scene, before selection.
    """
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    if bank is None:
        from .priorbank import load_prior_bank

        bank, _ = load_prior_bank(options.prior_bank, options.cache_root)
    encoder = bank_encoder(options.encoder, bank.paths, options.weights, options.seed, options.device,
                           options.runtime, str(options.cache_root))
    if options.batch_size:
        encoder.batch_size = options.batch_size
    on_progress("prior_bank", 0, len(bank))
    centroids = bank_centroids(bank, encoder, options, on_progress)
    timings["stage2_prior_bank"] = time.perf_counter() - t0

    survivors = (tiles["status"] == Status.KEPT).to_numpy()
    cand = np.flatnonzero(survivors)
    sel = options.selection
    stage1_cut = (stage1_count if stage1_count is not None else cand.size) if options.stage1_rule == "bank" else None
    by_path = {s.path: s for s in sources}
    scale_by_path = {s.path: sc for s, sc in zip(sources, scalings)}
    cache = EmbeddingCache(options.cache_root, encoder.cache_key)
    all_ids = all_dist = None
    evaluation = None
    if not options.needs_vectors:  # the usual run: only nearest centroids travel, no embedding matrix
        t0 = time.perf_counter()
        on_progress("encoding", 0, int(cand.size))
        ids, dist = embed_and_assign(tiles.iloc[cand], by_path, scale_by_path, encoder, centroids, cache, client,
                                     on_progress)
        timings["stage2_encoding"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        clusters_used = centroids
        applied = apply_selection(tiles, cand, ids, dist, clusters_used.labels, budget, sel, stage1_count=stage1_cut)
        on_progress("selection", 1, 1)
        timings["stage2_selection"] = time.perf_counter() - t0
    else:
        embedded = np.arange(len(tiles)) if options.evaluate else cand
        with _scratch_vectors(options.cache_root, embedded.size, encoder.dim) as vectors:
            t0 = time.perf_counter()
            on_progress("encoding", 0, int(embedded.size))
            embed_tiles(tiles.iloc[embedded], by_path, scale_by_path, encoder, cache, client, out=vectors,
                        on_progress=on_progress)
            timings["stage2_encoding"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            cand_vectors = vectors if embedded.size == cand.size else vectors[cand]
            if options.clustering == "self":
                clusters_used, ids, dist = self_clusters(cand_vectors, centroids, k=len(centroids), seed=options.seed)
            else:
                clusters_used = centroids
                ids, dist = assign_to_centroids(cand_vectors, centroids)

            def duplicates(inner: np.ndarray) -> np.ndarray:
                order = centroid_first_order(ids[inner], dist[inner], sel.spread, sel.seed)
                assert sel.dedup is not None
                return find_duplicates(cand_vectors[inner], ids[inner], order, sel.dedup)

            applied = apply_selection(tiles, cand, ids, dist, clusters_used.labels, budget, sel,
                                      stage1_count=stage1_cut, duplicates=duplicates if sel.dedup is not None else None)
            on_progress("selection", 1, 1)
            if options.evaluate:  # every tile has an embedding: give each its nearest scene
                all_ids, all_dist = assign_to_centroids(vectors, clusters_used)
            timings["stage2_selection"] = time.perf_counter() - t0
            if options.evaluate:
                from ..evaluation import evaluate_run

                t1 = time.perf_counter()
                on_progress("evaluation", 0, 1)
                evaluation = evaluate_run(tiles, np.asarray(vectors), applied.kept, survivors, centroids, options,
                                          budget, sources, scalings, pool=applied.pool,
                                          pool_ids=applied.pool_cluster, pool_dist=applied.pool_distance,
                                          on_progress=on_progress, bank=bank)
                timings["evaluation"] = time.perf_counter() - t1

    out = _with_stage2_columns(tiles, cand, ids, dist, clusters_used, applied, all_ids, all_dist)
    k_all = len(clusters_used)
    clusters = pd.DataFrame({
        "cluster": np.arange(k_all),
        "scene": clusters_used.labels,
        "purity": clusters_used.purity,
        "bank_members": clusters_used.members,
        "size": applied.size,
        "duplicates": applied.duplicates,
        "quota": applied.quota,
        "kept": applied.kept_per_cluster,
    })
    record = {
        "encoder": encoder.name,
        "encoder_key": encoder.cache_key,
        "encoder_runtime": encoder.runtime,
        "onnxruntime": onnxruntime_version(),
        "weights": options.weights,
        "prior_bank": bank.roots,
        "prior_bank_fingerprint": bank.fingerprint,
        "prior_bank_images": len(bank),
        "n_classes": len(bank.classes),
        "n_centroids": len(centroids),
        "bank_images_per_class": bank.class_counts(),
        "bank_samples": options.bank_samples,
        "bank_gsd": bank.gsd,
        "centroids_per_class": {str(c): int(n) for c, n in zip(*np.unique(centroids.labels, return_counts=True))},
        "k_per_class": options.k_per_class,
        "images_per_centroid": options.images_per_centroid,
        "k": options.k,
        "clustering": options.clustering,
        "stage1_rule": options.stage1_rule,
        "stage1_candidates": int(cand.size),
        "stage1_passed": int(applied.pool.size),
        "stage1_decides": applied.stage1_decides,
        "quota_by": sel.quota_by,
        "uniformity": sel.uniformity,
        "spread": sel.spread,
        "dedup": sel.dedup,
        "budget": int(budget),
        "kept": int(applied.kept.sum()),
        "cache_dir": str(options.cache_root),
        "seed": options.seed,
    }
    return Stage2Result(out, clusters, evaluation, record, timings)


class _scratch_vectors:
    """A memory-mapped (n, dim) float32 scratch file under the cache, removed on exit: the
    embeddings of a run need no more memory than one batch."""

    def __init__(self, cache_root: Path, n: int, dim: int):
        self.folder, self.shape = cache_root / "scratch", (n, dim)

    def __enter__(self) -> np.ndarray:
        self.folder.mkdir(parents=True, exist_ok=True)
        fd, self.path = tempfile.mkstemp(prefix="run-", suffix=".npy", dir=self.folder)
        os.close(fd)
        self.array = np.lib.format.open_memmap(self.path, mode="w+", dtype=np.float32, shape=self.shape)
        return self.array

    def __exit__(self, *exc: object) -> None:
        del self.array
        os.unlink(self.path)


def _with_stage2_columns(tiles: gpd.GeoDataFrame, cand: np.ndarray, ids: np.ndarray, dist: np.ndarray,
                         clusters_used: SceneCentroids, applied, all_ids, all_dist) -> gpd.GeoDataFrame:
    """The tiles with stage 2's columns and decisions."""
    n = len(tiles)
    cluster_col = np.full(n, -1, dtype=np.int64)
    scene_col = np.full(n, "", dtype=object)
    dist_col = np.full(n, np.nan)
    if all_ids is not None:
        cluster_col[:], dist_col[:] = all_ids, all_dist
        scene_col[:] = clusters_used.labels[all_ids]
    cluster_col[cand], dist_col[cand] = ids, dist
    scene_col[cand] = clusters_used.labels[ids]
    out = pd.DataFrame(tiles.drop(columns="geometry"))
    out["cluster"] = cluster_col
    out["scene"] = scene_col
    out["centroid_distance"] = dist_col
    out["cluster_rank"] = applied.cluster_rank
    out["scene_entropy_rank"] = applied.scene_entropy_rank
    out["status"] = applied.status
    out["reason"] = applied.reason
    return gpd.GeoDataFrame(out, geometry=tiles.geometry.values, crs=tiles.crs)
