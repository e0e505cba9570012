"""Stage 2 as one step of a run: embed the stage-1 survivors, assign them to the prior bank's
scene centroids (or cluster them), select the budget, and record how."""

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

from ..config import ClusteringMode, RunConfig, Runtime
from ..evaluation import evaluate_run
from ..features import Encoder
from ..features.cache import EmbeddingCache, default_cache_dir
from ..features.runtime import onnxruntime_version
from ..progress import ProgressCallback, no_progress
from ..reading.pixels import Scaling
from ..reading.sources import RasterSource
from ..scaleout import map_tasks
from ..schema import Stage2Record, Status
from .budget import Budget
from .clustering import SceneCentroids, assign_to_centroids, self_clusters
from .embedding import embed_tiles, encode_windows, pending_batches, read_ahead
from .priorbank import CentroidSpec, PriorBank, bank_centroids, bank_encoder, load_prior_bank
from .selection import AppliedSelection, SelectionOptions, apply_selection, centroid_first_order, find_duplicates

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Stage2Options:
    """What stage 2 needs of a run's parameters (see :class:`~rsprune_geo.config.RunConfig`,
    where each is defined): the prior bank, the encoder and where it runs, how the bank is
    over-clustered, the clustering, the selection, and the evaluation."""

    prior_bank: tuple[str, ...]
    encoder: str
    weights: str | None
    centroids: CentroidSpec
    clustering: ClusteringMode
    selection: SelectionOptions
    cache_dir: str | None
    device: str | None
    runtime: Runtime
    batch_size: int | None
    evaluate: bool
    labels: str | None
    label_column: str
    eval_encoder: str | None

    @classmethod
    def from_config(cls, config: RunConfig) -> Stage2Options:
        """Stage 2's options of a (validated) run configuration."""
        return cls(
            prior_bank=tuple(config.prior_bank), encoder=config.encoder, weights=config.weights,
            centroids=CentroidSpec(config.k_per_class, config.images_per_centroid, config.k, config.bank_samples,
                                   config.seed),
            clustering=config.clustering, selection=SelectionOptions.from_config(config),
            cache_dir=config.cache_dir, device=config.device, runtime=config.runtime, batch_size=config.batch_size,
            evaluate=config.evaluate, labels=config.labels, label_column=config.label_column,
            eval_encoder=config.eval_encoder,
        )

    @property
    def seed(self) -> int:
        """The run's seed."""
        return self.selection.seed

    @property
    def needs_vectors(self) -> bool:
        """Whether the run needs the embeddings themselves (near-duplicates, self-clustering, the
        evaluation); otherwise each tile's nearest centroid is all that leaves the encoder."""
        return self.evaluate or self.selection.dedup is not None or self.clustering is ClusteringMode.SELF

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
    record: Stage2Record
    timings: dict[str, float] = field(default_factory=dict)


@dataclass
class _Assigned:
    """Stage 2's work before the tiles get their columns: the clusters used, the candidates'
    nearest cluster and distance, the applied selection, and (evaluation) every tile's nearest
    cluster and the evaluation table."""

    clusters: SceneCentroids
    ids: np.ndarray
    dist: np.ndarray
    applied: AppliedSelection
    all_ids: np.ndarray | None = None
    all_dist: np.ndarray | None = None
    evaluation: pd.DataFrame | None = None


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
    budget: Budget,
    bank: PriorBank | None = None,
    client: Any | None = None,
    on_progress: ProgressCallback = no_progress,
) -> Stage2Result:
    """Stage 2 on the tiles stage 1 passed (status ``kept``): keep ``budget.keep_count`` of them.

    With the ``bank`` stage-1 rule, stage 1's cut (``budget.scene_cut``) is taken here, within
    each candidate's nearest scene, before selection.
    """
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    if bank is None:
        bank, _ = load_prior_bank(options.prior_bank, options.cache_root)
    encoder = bank_encoder(options.encoder, bank.paths, options.weights, options.seed, options.device,
                           options.runtime, str(options.cache_root))
    if options.batch_size:
        encoder.batch_size = options.batch_size
    on_progress("prior_bank", 0, len(bank))
    centroids = bank_centroids(bank, encoder, options.centroids, options.cache_root, on_progress)
    timings["stage2_prior_bank"] = time.perf_counter() - t0

    cand = np.flatnonzero((tiles["status"] == Status.KEPT).to_numpy())
    places = _Places({s.path: s for s in sources}, {s.path: sc for s, sc in zip(sources, scalings)},
                     EmbeddingCache(options.cache_root, encoder.cache_key), client)
    work = _assign_with_vectors if options.needs_vectors else _assign_nearest
    done = work(tiles, cand, places, encoder, centroids, options, budget, timings, on_progress, bank)
    out = _with_stage2_columns(tiles, cand, done)
    record = Stage2Record(
        encoder=encoder.name, encoder_key=encoder.cache_key, encoder_runtime=str(encoder.runtime),
        onnxruntime=onnxruntime_version(), weights=options.weights, prior_bank=bank.roots,
        prior_bank_fingerprint=bank.fingerprint, prior_bank_images=len(bank), n_classes=len(bank.classes),
        n_centroids=len(centroids), bank_images_per_class=bank.class_counts(),
        bank_samples=options.centroids.bank_samples, bank_gsd=bank.gsd,
        centroids_per_class={str(c): int(n) for c, n in zip(*np.unique(centroids.labels, return_counts=True))},
        k_per_class=options.centroids.k_per_class, images_per_centroid=options.centroids.images_per_centroid,
        k=options.centroids.k, clustering=options.clustering.value, stage1_rule=budget.rule.value,
        stage1_candidates=int(cand.size), stage1_passed=int(done.applied.pool.size),
        stage1_decides=done.applied.stage1_decides, quota_by=options.selection.quota_by.value,
        uniformity=options.selection.uniformity, spread=options.selection.spread, dedup=options.selection.dedup,
        budget=budget.keep_count, kept=int(done.applied.kept.sum()), cache_dir=str(options.cache_root),
        seed=options.seed,
    )
    return Stage2Result(out, clusters_table(done.clusters, done.applied), done.evaluation, record, timings)


@dataclass
class _Places:
    """Where stage 2 reads and caches: sources and scalings by path, the embedding cache, the
    Dask client (``None``: local threads)."""

    sources: dict[str, RasterSource]
    scalings: dict[str, Scaling]
    cache: EmbeddingCache
    client: Any | None


def _assign_nearest(tiles, cand, places: _Places, encoder, centroids, options: Stage2Options, budget: Budget,
                    timings, on_progress, bank) -> _Assigned:
    """The usual run: only each candidate's nearest centroid leaves the encoder, no embedding matrix."""
    t0 = time.perf_counter()
    on_progress("encoding", 0, int(cand.size))
    ids, dist = embed_and_assign(tiles.iloc[cand], places.sources, places.scalings, encoder, centroids, places.cache,
                                 places.client, on_progress)
    timings["stage2_encoding"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    applied = apply_selection(tiles, cand, ids, dist, centroids.labels, budget.keep_count, options.selection,
                              scene_cut=budget.scene_cut)
    on_progress("selection", 1, 1)
    timings["stage2_selection"] = time.perf_counter() - t0
    return _Assigned(centroids, ids, dist, applied)


def _assign_with_vectors(tiles, cand, places: _Places, encoder, centroids, options: Stage2Options, budget: Budget,
                         timings, on_progress, bank) -> _Assigned:
    """Runs that need the embeddings (near-duplicates, self-clustering, the evaluation): they go
    to a memory-mapped scratch file, one batch in memory at a time."""
    embedded = np.arange(len(tiles)) if options.evaluate else cand
    sel = options.selection
    with _scratch_vectors(options.cache_root, embedded.size, encoder.dim) as vectors:
        t0 = time.perf_counter()
        on_progress("encoding", 0, int(embedded.size))
        embed_tiles(tiles.iloc[embedded], places.sources, places.scalings, encoder, places.cache, places.client,
                    out=vectors, on_progress=on_progress)
        timings["stage2_encoding"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        cand_vectors = vectors if embedded.size == cand.size else vectors[cand]
        if options.clustering is ClusteringMode.SELF:
            used, ids, dist = self_clusters(cand_vectors, centroids, k=len(centroids), seed=options.seed)
        else:
            used = centroids
            ids, dist = assign_to_centroids(cand_vectors, centroids)

        def duplicates(inner: np.ndarray) -> np.ndarray:
            assert sel.dedup is not None
            order = centroid_first_order(ids[inner], dist[inner], sel.spread, sel.seed)
            return find_duplicates(cand_vectors[inner], ids[inner], order, sel.dedup)

        applied = apply_selection(tiles, cand, ids, dist, used.labels, budget.keep_count, sel,
                                  scene_cut=budget.scene_cut, duplicates=duplicates if sel.dedup is not None else None)
        on_progress("selection", 1, 1)
        timings["stage2_selection"] = time.perf_counter() - t0
        done = _Assigned(used, ids, dist, applied)
        if options.evaluate:  # every tile has an embedding: give each its nearest scene
            done.all_ids, done.all_dist = assign_to_centroids(vectors, used)
            t0 = time.perf_counter()
            on_progress("evaluation", 0, 1)
            done.evaluation = evaluate_run(tiles, np.asarray(vectors), applied, centroids, options, budget,
                                           list(places.sources.values()), list(places.scalings.values()),
                                           on_progress=on_progress, bank=bank)
            timings["evaluation"] = time.perf_counter() - t0
    return done


def clusters_table(used: SceneCentroids, applied: AppliedSelection) -> pd.DataFrame:
    """The ``clusters`` layer: each cluster's scene, purity, bank members, candidates,
    near-duplicates, quota and kept tiles."""
    return pd.DataFrame({
        "cluster": np.arange(len(used)),
        "scene": used.labels,
        "purity": used.purity,
        "bank_members": used.members,
        "size": applied.size,
        "duplicates": applied.duplicates,
        "quota": applied.quota,
        "kept": applied.kept_per_cluster,
    })


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


def _with_stage2_columns(tiles: gpd.GeoDataFrame, cand: np.ndarray, done: _Assigned) -> gpd.GeoDataFrame:
    """The tiles with stage 2's columns and decisions."""
    ids, dist, clusters_used, applied = done.ids, done.dist, done.clusters, done.applied
    all_ids, all_dist = done.all_ids, done.all_dist
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
