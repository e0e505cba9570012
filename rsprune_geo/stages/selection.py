"""Selection: share a budget among clusters (uniformity vs size) and rank tiles centroid-first."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np
import pandas as pd

from ..choices import CellPeriod, GeoSpread, QuotaMode
from ..config import RunConfig, default_of
from ..engine.columns import TileColumns
from ..errors import InputError, param
from ..runs.vocabulary import Reason, Status
from .geospread import (
    _a_group_holds_more_than,
    cell_groups,
    cell_keys,
    geo_picks,
    spans_ground_or_time,
)
from .information import stratified_entropy_cut
from .quotas import blended_quotas, scene_quotas


@dataclass(frozen=True)
class HeldBefore:
    """What an earlier selection holds, that a new one adds to.

    An extension (``extend``) adds to it. It holds its kept tiles per scene, and each kept tile's ground
    cell in the new run's ground grid ((M, 2) row and column, -1 none) and date (datetime64, NaT
    unknown).
    """

    scenes: dict[str, int]
    cells: np.ndarray
    dates: np.ndarray

    @property
    def tiles(self) -> int:
        """How many tiles the earlier selection kept."""
        return len(self.cells)








def centroid_first_order(
    labels: np.ndarray, distances: np.ndarray, spread_bins: int = 1, seed: int = 0
) -> np.ndarray:
    """Rank of each tile inside its cluster, 0 = picked first (int32).

    ``spread_bins=1``: ascending distance to the centroid (the paper's centroid-prioritised
    order). ``spread_bins=q>1``: the cluster's distances are cut into q quantile bins and picks
    go round-robin from the nearest bin outwards, each bin centroid-first, so a small quota
    still spans the cluster. Ties break by a seeded permutation, so the order is reproducible.
    """
    labels = np.asarray(labels)
    distances = np.asarray(distances)
    n = labels.size
    tiebreak = np.random.default_rng(seed).permutation(n)
    order = np.lexsort((tiebreak, distances, labels))
    del tiebreak
    rank = np.empty(n, dtype=np.int32)
    _, sizes = _group_sizes(labels)
    ends = np.cumsum(sizes)
    for a, b in zip(ends - sizes, ends):
        members = order[a:b]  # this cluster, nearest first
        m = members.size
        if spread_bins <= 1 or m <= spread_bins:
            rank[members] = np.arange(m)
            continue
        position = np.arange(m)
        bin_of = position * spread_bins // m
        within = position - np.searchsorted(bin_of, bin_of)
        rank[members[np.lexsort((bin_of, within))]] = np.arange(m)
    return rank


def _group_sizes(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct labels (sorted) and how many tiles each has.

    Small non-negative int labels are counted, not sorted.
    """
    if labels.dtype.kind in "iu" and labels.size and labels.min() >= 0 and labels.max() < 1 << 24:
        counts = np.bincount(labels)
        present = np.flatnonzero(counts)
        return present, counts[present]
    names, sizes = np.unique(labels, return_counts=True)
    return names, sizes


def _group_codes(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``np.unique(labels, return_inverse=True, return_counts=True)``.

    In a few bytes a tile for small non-negative int labels (the codes are int32).
    """
    names, sizes = _group_sizes(labels)
    if labels.dtype.kind in "iu" and labels.size and labels.min() >= 0 and labels.max() < 1 << 24:
        lookup = np.full(int(labels.max()) + 1, -1, dtype=np.int32)
        lookup[names] = np.arange(names.size, dtype=np.int32)
        return names, lookup[labels], sizes
    names, inverse, sizes = np.unique(labels, return_inverse=True, return_counts=True)
    return names, inverse, sizes


@dataclass
class Selection:
    """The outcome of selection.

    Which tiles are kept, their in-cluster rank and the quotas; ``capped`` marks tiles a per-cell cap
    left out although their cluster's quota reached them.
    """

    kept: np.ndarray
    rank: np.ndarray
    clusters: np.ndarray
    sizes: np.ndarray
    quotas: np.ndarray
    capped: np.ndarray | None = None
























def select_tiles(
    labels: np.ndarray,
    distances: np.ndarray,
    budget: int,
    uniformity: float = 1.0,
    spread_bins: int = 1,
    seed: int = 0,
    cluster_scenes: np.ndarray | None = None,
    cells: np.ndarray | None = None,
    dates: np.ndarray | None = None,
    max_per_cell: int | None = None,
    cell_period: CellPeriod | str = CellPeriod.ALL,
    geo_spread: GeoSpread | str = GeoSpread.OFF,
    held: HeldBefore | None = None,
) -> Selection:
    """Keep exactly ``min(budget, n)`` tiles: per-cluster quotas, then centroid-first picks.

    The same inputs and seed always give the same selection.

    Args:
        labels: each tile's cluster id.
        distances: each tile's distance to its centroid.
        budget: how many tiles to keep.
        uniformity: 1 shares the budget equally among clusters (water-filling); 0 in
            proportion to their sizes; between, a mix.
        spread_bins: cut each cluster's distances into this many quantile bins and pick across
            them in turn; 1 picks nearest first (the paper's order).
        seed: breaks ties (in quotas and among equal distances) reproducibly.
        cluster_scenes: the scene of every cluster id; the budget is shared among scenes first
            (:func:`scene_quotas`).
        cells: each tile's ground cell, (N, 2) row and column, -1 for none.
        dates: each tile's date (datetime64, NaT unknown).
        max_per_cell: at most this many tiles of a cell are kept while the budget allows;
            ``None`` or 0 for no cap.
        cell_period: what the cap counts within: the whole run, each year or each season.
        geo_spread: ``on`` prefers tiles whose date and neighbourhood hold fewer kept tiles
            (:func:`geo_picks`); ``auto`` turns it on when tiles share a cell or span dates.
        held: what an earlier selection kept (``extend``): the scenes it holds least of go
            first, and its tiles count against the per-cell cap.

    Returns:
        The kept mask, each tile's rank within its cluster, the clusters, their sizes and quotas.
    """
    labels = np.asarray(labels)
    if labels.shape != np.shape(distances):
        raise InputError("labels and distances must have the same length")
    if budget < 0:
        raise InputError(f"budget {budget}: must be non-negative")
    clusters, inverse, sizes = _group_codes(labels)
    if cluster_scenes is None:
        quotas = blended_quotas(sizes, budget, uniformity, seed)
    else:
        quotas = scene_quotas(sizes, np.asarray(cluster_scenes)[clusters], budget, uniformity, seed,
                              held.scenes if held is not None else None)
    rank = centroid_first_order(inverse, distances, spread_bins, seed)
    kept = rank < quotas[inverse]
    capped = None
    codes = held_codes = None
    cells_all, dates_all = _with_held(cells, dates, held, labels.size)
    if cells_all is not None and max_per_cell and _a_group_holds_more_than(
            cell_keys(cells_all, dates_all, cell_period), max_per_cell):
        codes = cell_groups(cells_all, dates_all, cell_period)  # only when some cell holds more than the cap
        codes, held_codes = codes[:labels.size], codes[labels.size:]
    mode = GeoSpread.parse(geo_spread, "geo_spread")
    spread = mode is GeoSpread.ON or (mode is GeoSpread.AUTO and spans_ground_or_time(cells, dates))
    if codes is not None or (spread and (cells is not None or dates is not None)):
        date_codes = None
        if spread and dates is not None:
            stamps = pd.to_datetime(np.asarray(dates), errors="coerce")
            date_codes = np.where(pd.isna(stamps), -1, pd.factorize(stamps)[0])
        positions = np.asarray(cells, dtype=np.int64).reshape(-1, 2) if spread and cells is not None else None
        kept, capped = geo_picks(rank, inverse, quotas, int(kept.sum()), seed, codes,
                                 max_per_cell if codes is not None else None, positions, date_codes, spread,
                                 held_groups=held_codes)
    return Selection(kept=kept, rank=rank, clusters=clusters, sizes=sizes, quotas=quotas, capped=capped)


def _with_held(cells: np.ndarray | None, dates: np.ndarray | None, held: HeldBefore | None,
               n: int) -> tuple[np.ndarray | None, np.ndarray | None]:
    """The tiles' cells and dates followed by those of an earlier selection's kept tiles."""
    if held is None or held.tiles == 0:
        return cells, dates
    own_cells = np.full((n, 2), -1, dtype=np.int64) if cells is None else np.asarray(cells, dtype=np.int64)
    all_cells = np.concatenate([own_cells.reshape(-1, 2), np.asarray(held.cells, dtype=np.int64).reshape(-1, 2)])
    if dates is None and pd.isna(held.dates).all():
        return all_cells, None
    own_dates = np.full(n, np.datetime64("NaT"), dtype="datetime64[ns]") if dates is None else \
        np.asarray(dates, dtype="datetime64[ns]")
    return all_cells, np.concatenate([own_dates, np.asarray(held.dates, dtype="datetime64[ns]")])


def find_duplicates(
    embeddings: Any, labels: np.ndarray, rank: np.ndarray, threshold: float
) -> np.ndarray:
    """Near-duplicates inside each cluster.

    Walking the cluster in rank order, a tile whose cosine similarity to an earlier non-duplicate tile
    is ``>= threshold`` is a duplicate.

    The centroid-first tile of every cluster is never a duplicate. Cost grows with cluster
    size times the number of distinct tiles kept in it.
    """
    if not 0 < threshold <= 1:
        raise InputError(f"{param('dedup')} {threshold}: the cosine threshold must be in (0, 1]")
    duplicate = np.zeros(len(embeddings), dtype=bool)
    labels = np.asarray(labels)
    for cluster in np.unique(labels):
        members = np.flatnonzero(labels == cluster)
        members = members[np.argsort(rank[members], kind="stable")]
        x = np.asarray(embeddings[np.sort(members)], dtype=np.float32)  # one cluster in memory
        x = x[np.argsort(np.argsort(members))]
        norms = np.linalg.norm(x, axis=1, keepdims=True)
        x = (x / np.where(norms > 0, norms, 1)).astype(np.float32)
        accepted = np.empty_like(x)
        count = 0
        for i, m in enumerate(members):
            if count and float((accepted[:count] @ x[i]).max()) >= threshold:
                duplicate[m] = True
                continue
            accepted[count] = x[i]
            count += 1
    return duplicate


@dataclass(frozen=True)
class SelectionOptions:
    """How stage 2 selects.

    Quota blend, spread, seed, quota sharing, near-duplicate threshold, and the cap on kept tiles per
    ground cell (and period); each defaults to the run parameter of the same name
    (:class:`~rsprune_geo.config.RunConfig`).
    """

    uniformity: float = default_of("uniformity")
    spread: int = default_of("spread")
    seed: int = default_of("seed")
    quota_by: QuotaMode = default_of("quota_by")
    dedup: float | None = default_of("dedup")
    max_per_cell: int | None = default_of("max_per_cell")
    cell_period: CellPeriod = default_of("cell_period")
    geo_spread: GeoSpread = default_of("geo_spread")

    @classmethod
    def from_config(cls, config: RunConfig, **overrides: Any) -> SelectionOptions:
        """The selection options of a run configuration, with ``overrides`` (``None``: the run's)."""
        values = {f.name: getattr(config, f.name) for f in fields(cls)}
        values.update({k: v for k, v in overrides.items() if v is not None})
        values["quota_by"] = QuotaMode.parse(values["quota_by"], "quota_by")
        values["cell_period"] = CellPeriod.parse(values["cell_period"], "cell_period")
        values["geo_spread"] = GeoSpread.parse(values["geo_spread"], "geo_spread")
        return cls(**values)


@dataclass
class AppliedSelection:
    """A selection applied to a run's :class:`~rsprune_geo.engine.columns.TileColumns`.

    Statuses, reasons and ranks are set in the columns; this says what the selection did to each cluster
    (indexed by cluster id).

    ``pool`` holds the positions of the tiles that passed stage 1 (the selection's candidates),
    ``pool_cluster``/``pool_distance`` their clusters and distances; ``scene_quota`` is what
    stage 1's cut within scenes let each scene keep (bank rule).
    """

    pool: np.ndarray
    pool_cluster: np.ndarray
    pool_distance: np.ndarray
    size: np.ndarray
    duplicates: np.ndarray
    quota: np.ndarray
    kept_per_cluster: np.ndarray
    stage1_decides: bool
    kept: int
    scene_quota: dict[str, int] = field(default_factory=dict)


def apply_selection(
    columns: TileColumns,
    candidates: np.ndarray,
    cluster_scenes: np.ndarray,
    budget: int,
    options: SelectionOptions,
    order_of: Callable[[np.ndarray], np.ndarray],
    scene_cut: int | None = None,
    duplicates: np.ndarray | Callable[[np.ndarray], np.ndarray] | None = None,
    held: HeldBefore | None = None,
) -> AppliedSelection:
    """Stage 2's decisions on a run's columns (in place), shared by a run and a re-selection.

    ``candidates`` are the positions of the tiles stage 1 passed, with their ``cluster`` and
    ``distance`` in ``columns``; ``cluster_scenes`` is the scene of every cluster id; ``order_of``
    gives the tie-break keys of positions (they sort like the tile ids). With ``scene_cut`` (the
    ``bank`` rule, :attr:`~rsprune_geo.stages.budget.Budget.scene_cut`) stage 1's cut is taken
    first within each candidate's scene. Then ``budget`` tiles are kept: every one passed when the
    budget covers them, else per-cluster quotas and centroid-first picks among the tiles that are
    not near-duplicates. ``duplicates``: a mask over the candidates, or a function of the passed
    candidates' indexes (into ``candidates``) returning their mask. With
    ``options.max_per_cell`` the tiles' ground cells (and dates, by ``options.cell_period``) cap
    the tiles kept per cell (:func:`cell_groups`). ``held``: what an earlier selection kept, which
    this one adds to (:func:`select_tiles`).
    """
    candidates = np.asarray(candidates)
    cluster_scenes = np.asarray(cluster_scenes)
    k_all = len(cluster_scenes)
    scene_quota: dict[str, int] = {}
    inner: np.ndarray | None = None  # indexes into candidates of those that pass (None: all)
    if scene_cut is not None:
        passed, scene_quota = _cut_within_scenes(columns, candidates, cluster_scenes, scene_cut, order_of)
        if not passed.all():
            inner = np.flatnonzero(passed)
        del passed
    pool = candidates if inner is None else candidates[inner]
    ids, dist = columns.cluster[pool], columns.distance[pool]
    stage1_decides = budget >= pool.size
    duplicate = None
    if not stage1_decides and duplicates is not None:
        where = inner if inner is not None else np.arange(candidates.size)
        duplicate = np.asarray(duplicates(where) if callable(duplicates) else np.asarray(duplicates)[where], dtype=bool)
    fresh = pool if duplicate is None else pool[~duplicate]
    fresh_ids = ids if duplicate is None else ids[~duplicate]
    scenes_of = cluster_scenes if options.quota_by is QuotaMode.SCENE and not stage1_decides else None
    grounded = bool((columns.cell[fresh, 0] >= 0).any()) if fresh.size else False
    grounded = grounded or (held is not None and bool((np.asarray(held.cells).reshape(-1, 2)[:, 0] >= 0).any()))
    chosen = select_tiles(fresh_ids, dist if duplicate is None else dist[~duplicate], min(int(budget), fresh.size),
                          options.uniformity, options.spread, options.seed, cluster_scenes=scenes_of,
                          cells=columns.cell[fresh] if grounded else None,
                          dates=columns.dates_of(fresh) if columns.several_dates() or held is not None else None,
                          max_per_cell=options.max_per_cell, cell_period=options.cell_period,
                          geo_spread=options.geo_spread, held=held)
    if duplicate is not None:
        columns.mark(pool[duplicate], Status.DUPLICATE, Reason.DUPLICATE)
    columns.mark(fresh[chosen.kept], Status.KEPT)
    columns.mark(fresh[~chosen.kept], Status.NOT_SELECTED, Reason.QUOTA)
    if chosen.capped is not None and chosen.capped.any():
        columns.reason[fresh[chosen.capped]] = Reason.CELL_FULL
    columns.cluster_rank[fresh] = chosen.rank
    quotas = np.zeros(k_all, dtype=np.int64)
    quotas[chosen.clusters] = chosen.quotas
    return AppliedSelection(
        pool=pool, pool_cluster=ids, pool_distance=dist, size=np.bincount(ids, minlength=k_all),
        duplicates=np.bincount(ids[duplicate], minlength=k_all) if duplicate is not None else np.zeros(k_all, np.int64),
        quota=quotas, kept_per_cluster=np.bincount(fresh_ids[chosen.kept], minlength=k_all),
        stage1_decides=bool(stage1_decides), kept=int(chosen.kept.sum()), scene_quota=scene_quota,
    )


def _cut_within_scenes(columns: TileColumns, candidates: np.ndarray, cluster_scenes: np.ndarray, count: int,
                       order_of: Callable[[np.ndarray], np.ndarray]) -> tuple[np.ndarray, dict[str, int]]:
    """Stage 1's cut within each candidate's scene (:func:`stratified_entropy_cut`).

    Marked in ``columns`` (and each candidate's rank within its scene): ``(passed mask over the
    candidates, each scene's quota)``.
    """
    names, scene_of_cluster = np.unique(cluster_scenes, return_inverse=True)
    codes = scene_of_cluster.astype(np.int16 if names.size < 1 << 15 else np.int32)[columns.cluster[candidates]]
    passed, rank, quota = stratified_entropy_cut(columns.entropy[candidates], codes, int(count), order_of(candidates),
                                                 scratch=True)
    columns.scene_rank[candidates] = rank
    del rank
    columns.mark(candidates[~passed], Status.LOW_INFORMATION, Reason.SCENE_CUT)
    present = np.unique(codes)
    quota_of_scene = np.zeros(names.size, dtype=np.int64)
    quota_of_scene[codes] = quota
    return passed, {str(names[s]): int(quota_of_scene[s]) for s in present}
