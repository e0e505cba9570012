"""Judge selections against the truth.

Labels from a vector layer, a column or chip folders; baselines on the same candidates and budget;
metrics in an independent encoder's space.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import geopandas as gpd
import numpy as np
import pandas as pd

from .bank.priorbank import PriorBank, load_prior_bank
from .bank.profile import bank_encoder
from .choices import QuotaMode, Runtime
from .config import RunConfig
from .engine.embedding import embed_tiles
from .errors import InputError, param
from .features.cache import EmbeddingCache, default_cache_dir
from .features.registry import encoder_info, independent_encoder_name
from .runs.vocabulary import Status
from .stages.budget import Budget
from .stages.clustering import SceneCentroids, assign_to_centroids, normalise, self_clusters
from .stages.selection import AppliedSelection, SelectionOptions, select_tiles

if TYPE_CHECKING:  # pragma: no cover
    from .engine.columns import TileColumns
    from .engine.plan import RunPlan
    from .stages.stage1 import Stage1Result
    from .stages.stage2 import Stage2Model

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EvaluationOptions:
    """What the evaluation needs of a run's parameters (see :class:`~rsprune_geo.config.RunConfig`).

    The truth (``labels``, ``label_column``), the run's ``encoder`` and the independent one
    (``eval_encoder``), the prior bank, where embeddings are cached, the runtime and the selection the
    baselines share with RS-Prune.
    """

    labels: str | None
    label_column: str
    encoder: str
    eval_encoder: str | None
    prior_bank: tuple[str, ...]
    cache_dir: str | None
    runtime: Runtime
    selection: SelectionOptions

    @classmethod
    def from_config(cls, config: RunConfig) -> EvaluationOptions:
        """The evaluation's options of a (validated) run configuration."""
        return cls(labels=config.labels, label_column=config.label_column, encoder=config.encoder,
                   eval_encoder=config.eval_encoder, prior_bank=tuple(config.prior_bank), cache_dir=config.cache_dir,
                   runtime=config.runtime, selection=SelectionOptions.from_config(config))

    @property
    def cache_root(self) -> Path:
        """The embedding cache folder."""
        return Path(self.cache_dir) if self.cache_dir else default_cache_dir()

    def check_encoder(self) -> None:
        """Raise :class:`~rsprune_geo.errors.InputError` when the independent encoder cannot run.

        Raise :class:`~rsprune_geo.errors.InputError` (naming the extra to install) when the independent
        encoder cannot run here: called before a run's work, not after it.
        """
        name = independent_encoder_name(self.encoder, self.eval_encoder)
        encoder_info(name).require_installed(f"{param('evaluate')}'s independent encoder ({name})")

#: Labels that mean "not a land cover": such tiles (and tiles dropped as nodata) count as junk.
JUNK_LABELS = ("junk", "nodata", "blank", "cloud", "no_data", "open_water")


def label_balance(labels: np.ndarray, n_classes: int) -> float:
    """Normalised entropy (0–1) of a label distribution.

    Args:
        labels: the labels.
        n_classes: how many classes there are (present or not).

    Returns:
        1 when every class is equally present, 0 when one holds all.
    """
    labels = np.asarray(labels)
    if labels.size == 0 or n_classes <= 1:
        return 0.0
    _, counts = np.unique(labels, return_counts=True)
    p = counts / counts.sum()
    return float(-(p * np.log(p)).sum() / np.log(n_classes))


def coverage(full: np.ndarray, kept: np.ndarray, k: int = 5, max_full: int = 20000, seed: int = 0) -> float:
    """Coverage (Naeem et al.

    2020): the share of the full set whose nearest kept sample lies within its own k-NN radius in the
    full set (cosine distance). 1 = the kept set spans it.
    """
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
    """Fréchet distance between Gaussians fitted to two embedding sets.

    In the top ``dims`` principal axes of ``a`` (stable with few samples). Lower = the kept set looks
    like the full one.
    """
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


def labels_from_vector(tiles: gpd.GeoDataFrame, path: str, column: str = "label") -> np.ndarray:
    """Each tile's label.

    The ``column`` of the polygon of ``path`` (any CRS) it overlaps most; ``""`` where it overlaps none.
    """
    try:
        polygons = gpd.read_file(path)
    except Exception as exc:
        raise InputError(f"{path}: cannot read the labels ({str(exc).splitlines()[0]})") from None
    if column not in polygons:
        raise InputError(f"{path}: no column {column!r} (columns: {', '.join(map(str, polygons.columns))})")
    if polygons.crs is not None and tiles.crs is not None and polygons.crs != tiles.crs:
        polygons = polygons.to_crs(tiles.crs)
    frame = gpd.GeoDataFrame({"tile": np.arange(len(tiles))}, geometry=tiles.geometry.values, crs=tiles.crs)
    labelled = gpd.GeoDataFrame({"label": polygons[column].astype(str).values},
                                geometry=polygons.geometry.values, crs=frame.crs)
    pieces = gpd.overlay(frame, labelled, how="intersection", keep_geom_type=True)
    out = np.full(len(tiles), "", dtype=object)
    if len(pieces):
        pieces["area"] = pieces.geometry.area
        best = pieces.sort_values(["tile", "area"], ascending=[True, False]).drop_duplicates("tile")
        out[best["tile"].to_numpy()] = best["label"].to_numpy()
    return out


def labels_from_folders(tiles: pd.DataFrame) -> np.ndarray:
    """Each chip's label: the name of the folder that holds its file (``ROOT/<class>/chip.png``)."""
    return np.array([Path(p).parent.name for p in tiles["source"]], dtype=object)


def tile_labels(tiles: gpd.GeoDataFrame, labels: str, column: str = "label") -> np.ndarray:
    """True labels of the tiles.

    Args:
        tiles: the run's tiles.
        labels: ``folders`` (chip folder names), ``column`` (the tiles' own ``column``), or the
            path of a vector layer of labelled polygons (any CRS).
        column: the label column of the tiles or of the vector layer.

    Returns:
        One label a tile; empty text where none applies.

    Raises:
        InputError: the layer or the column is missing.
    """
    if labels == "folders":
        return labels_from_folders(tiles)
    if labels == "column":
        if column not in tiles:
            raise InputError(f"the tiles have no column {column!r} to take labels from")
        return tiles[column].fillna("").astype(str).to_numpy(dtype=object)
    if not Path(labels).exists():
        raise InputError(f"{labels}: no such labels file (or use 'folders' or 'column')")
    return labels_from_vector(tiles, labels, column)


def truth_metrics(kept: np.ndarray, labels: np.ndarray, junk: np.ndarray, n_classes: int) -> dict:
    """Classes kept, label balance and junk share of one selection, by true labels."""
    kept = np.asarray(kept, dtype=bool)
    real = kept & ~junk & (labels != "")
    return {
        "kept": int(kept.sum()),
        "classes_kept": int(np.unique(labels[real]).size),
        "label_balance": label_balance(labels[real], n_classes),
        "junk_kept": float((kept & junk).sum() / max(int(kept.sum()), 1)),
    }


def nearest_kept_distance(centres: np.ndarray) -> float:
    """Mean distance from each kept tile's centre to the nearest other kept tile's (CRS units).

    Nan for fewer than two.
    """
    import faiss

    points = np.asarray(centres, dtype=np.float64)
    if len(points) < 2:
        return float("nan")
    centred = np.ascontiguousarray(points - points.mean(axis=0), dtype=np.float32)
    index = faiss.IndexFlatL2(centred.shape[1])
    index.add(centred)
    distances, _ = index.search(centred, 2)
    return float(np.sqrt(np.maximum(distances[:, 1], 0)).mean())


def geo_metrics(kept: np.ndarray, cells: np.ndarray, dates: np.ndarray | None = None,
                centres: np.ndarray | None = None) -> dict:
    """Where and when a selection's kept tiles are.

    Distinct ground cells, the most tiles kept of one cell, the mean nearest-kept-neighbour distance,
    distinct dates and the largest share of the kept tiles from one date (dates only when some are
    known).
    """
    kept = np.asarray(kept, dtype=bool)
    on_ground = kept & (np.asarray(cells, dtype=object).astype(str) != "")
    counts = pd.Series(np.asarray(cells, dtype=object)[on_ground]).value_counts()
    row: dict[str, float] = {
        "cells_kept": int(counts.size),
        "max_per_cell": int(counts.max()) if counts.size else 0,
    }
    if centres is not None:
        row["nn_distance"] = nearest_kept_distance(np.asarray(centres)[on_ground])
    if dates is not None:
        stamps = pd.Series(pd.to_datetime(np.asarray(dates)[kept], errors="coerce")).dropna()
        if len(stamps):
            shares = stamps.value_counts(normalize=True)
            row["dates_kept"] = int(shares.size)
            row["max_date_share"] = float(shares.max())
    return row


def baseline_selections(
    n: int,
    data: np.ndarray,
    entropy: np.ndarray,
    tile_ids: np.ndarray,
    budget: int,
    stage1_count: int,
    pool: np.ndarray,
    pool_ids: np.ndarray,
    pool_dist: np.ndarray,
    pool_vectors: np.ndarray,
    all_vectors: np.ndarray,
    centroids: SceneCentroids,
    uniformity: float = 1.0,
    seed: int = 0,
    cluster_scenes: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Keep masks (over all ``n`` tiles) of the baselines, each at ``budget`` tiles.

    ``data`` marks tiles with data; ``stage1_count`` is the paper's stage-1 cut (its top 30%),
    used by ``stage-1 + random`` and ``rs-prune, paper stage 1``; ``pool`` (tile positions) are the
    run's stage-2 candidates,
    ``pool_ids``/``pool_dist`` their clusters and centroid distances, ``pool_vectors`` their
    embeddings; ``all_vectors`` embeds every tile (the paper's stage 1 + stage 2 needs them).
    """
    rng = np.random.default_rng(seed)
    out: dict[str, np.ndarray] = {}

    def mask(positions) -> np.ndarray:
        m = np.zeros(n, dtype=bool)
        m[np.asarray(positions, dtype=np.int64)] = True
        return m

    with_data = np.flatnonzero(data)
    out["random"] = mask(rng.choice(with_data, min(budget, with_data.size), replace=False))
    by_entropy = with_data[np.lexsort((tile_ids[with_data], -entropy[with_data]))]
    out["entropy only"] = mask(by_entropy[:budget])
    top = by_entropy[: max(stage1_count, budget)]
    out["stage-1 + random"] = mask(rng.choice(top, min(budget, top.size), replace=False))

    paper_ids, paper_dist = assign_to_centroids(all_vectors[top], centroids)
    paper = select_tiles(paper_ids, paper_dist, budget, uniformity, seed=seed, cluster_scenes=cluster_scenes)
    out["rs-prune, paper stage 1"] = mask(top[paper.kept])

    sel = select_tiles(pool_ids, pool_dist, budget, uniformity, seed=seed, cluster_scenes=cluster_scenes)
    picks = []
    for cluster, quota in zip(sel.clusters, sel.quotas):
        members = pool[pool_ids == cluster]
        picks.extend(rng.choice(members, int(quota), replace=False).tolist())
    out["per-cluster random"] = mask(picks)
    out["proportional quotas"] = mask(pool[select_tiles(pool_ids, pool_dist, budget, 0.0, seed=seed).kept])
    _, self_ids, self_dist = self_clusters(pool_vectors, centroids, k=len(centroids), seed=seed)
    out["self-clustering"] = mask(pool[select_tiles(self_ids, self_dist, budget, uniformity, seed=seed).kept])
    return out


def compare_selections(
    selections: dict[str, np.ndarray],
    data: np.ndarray,
    own_scenes: np.ndarray,
    n_scenes: int,
    independent: np.ndarray | None = None,
    labels: np.ndarray | None = None,
    junk: np.ndarray | None = None,
    seed: int = 0,
    ground: dict[str, np.ndarray | None] | None = None,
) -> pd.DataFrame:
    """One row of metrics per selection.

    With ``ground`` (``cells``, ``dates``, ``centres`` of every tile): where and when the kept
    tiles are (:func:`geo_metrics`).

    With true ``labels``: classes kept, label balance and junk kept by those labels. With
    ``independent`` embeddings (an encoder other than the one that selected): coverage and
    Fréchet distance of the kept real tiles against all real tiles with data. Always: scenes
    kept and balance on the method's own nearest-centroid partition, labelled ``(own)``.
    """
    if junk is None:
        junk = ~data
    real = data & ~junk
    n_classes = 0
    if labels is not None:
        real &= labels != ""
        n_classes = int(np.unique(labels[real]).size)
    rows = {}
    for name, kept in selections.items():
        kept = np.asarray(kept, dtype=bool)
        row: dict[str, float] = {"kept": int(kept.sum())}
        if labels is not None:
            row.update(truth_metrics(kept, labels, junk, n_classes))
        else:
            row["junk_kept"] = float((kept & junk).sum() / max(int(kept.sum()), 1))
        if independent is not None:
            row["coverage"] = coverage(independent[real], independent[kept & real], seed=seed)
            row["frechet"] = frechet_distance(independent[real], independent[kept & real])
        if ground is not None and ground.get("cells") is not None:
            assert ground["cells"] is not None
            row.update(geo_metrics(kept, ground["cells"], ground.get("dates"), ground.get("centres")))
        own = kept & data
        row["scenes_kept (own)"] = int(np.unique(own_scenes[own]).size)
        row["scene_balance (own)"] = label_balance(own_scenes[own], n_scenes)
        rows[name] = row
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index.name = "method"
    return table


def run_ground(tiles: pd.DataFrame) -> dict[str, np.ndarray | None] | None:
    """The ``ground`` of :func:`compare_selections` from a tiles table.

    Ground cells, dates (when any is known) and footprint centres; ``None`` for tiles without ground
    cells.
    """
    if "ground_cell" not in tiles or not (tiles["ground_cell"].astype(str) != "").any():
        return None
    dates = tiles["date"].to_numpy() if "date" in tiles and tiles["date"].notna().any() else None
    centres = None
    if hasattr(tiles, "geometry") and tiles.geometry is not None:
        import shapely

        centres = shapely.get_coordinates(shapely.centroid(tiles.geometry.values))
    return {"cells": tiles["ground_cell"].to_numpy(), "dates": dates, "centres": centres}


def independent_embeddings(tiles, sources, scalings, name: str, bank_paths: list[str], seed: int,
                           cache_root, on_progress=None, runtime: str = "auto") -> np.ndarray:
    """Every tile embedded by the independent encoder ``name`` (cached like any run's)."""
    encoder = bank_encoder(name, bank_paths, seed=seed, runtime=runtime, cache_dir=str(cache_root))
    by_path = {s.path: s for s in sources}
    scale_by_path = {s.path: sc for s, sc in zip(sources, scalings)}
    return embed_tiles(tiles, by_path, scale_by_path, encoder, EmbeddingCache(cache_root, encoder.cache_key),
                       on_progress=on_progress)


def evaluate_run(tiles: gpd.GeoDataFrame, vectors: np.ndarray, kept: np.ndarray, pool: np.ndarray,
                 pool_ids: np.ndarray, pool_dist: np.ndarray, centroids: SceneCentroids, options: EvaluationOptions,
                 budget: Budget, sources, scalings, on_progress=None, bank: PriorBank | None = None) -> pd.DataFrame:
    """The evaluation table of a run (``evaluate``).

    RS-Prune (the ``kept`` mask over the tiles) and the baselines on the same candidates (``pool``, rows
    of ``tiles``, with their clusters and distances) and budget, by true labels when ``options.labels``
    is given; ``vectors`` embed every tile (rows of ``tiles``), ``options`` are the run's evaluation
    options and ``bank`` its prior bank (loaded again when not given).
    """
    n = len(tiles)
    if len(vectors) != n:
        raise ValueError("evaluation needs every tile embedded")
    data = (tiles["status"] != Status.NODATA).to_numpy()
    entropy = tiles["entropy"].to_numpy(dtype=np.float64)
    ids = tiles["tile_id"].to_numpy()
    sel = options.selection
    selections = baseline_selections(
        n, data, entropy, ids, budget.keep_count, budget.paper_stage1_count, pool, pool_ids, pool_dist,
        vectors[pool], vectors, centroids, sel.uniformity, sel.seed,
        centroids.labels if sel.quota_by is QuotaMode.SCENE else None,
    )
    selections["rs-prune"] = np.asarray(kept, dtype=bool)
    own_ids, _ = assign_to_centroids(vectors, centroids)
    own_scenes = centroids.labels[own_ids]
    labels = junk = None
    if options.labels:
        labels = tile_labels(tiles, options.labels, options.label_column)
        junk = ~data | np.isin(np.char.lower(labels.astype(str)), JUNK_LABELS)
    if bank is None:
        bank, _ = load_prior_bank(options.prior_bank, options.cache_root)
    name = independent_encoder_name(options.encoder, options.eval_encoder)
    independent = independent_embeddings(tiles, sources, scalings, name, bank.paths, sel.seed, options.cache_root,
                                         on_progress, options.runtime)
    table = compare_selections(selections, data, own_scenes, len(set(centroids.labels.tolist())),
                               independent, labels, junk, sel.seed, ground=run_ground(tiles))
    table.attrs["independent_encoder"] = name
    return table


def evaluate_stage2(plan: RunPlan, options: EvaluationOptions, columns: TileColumns, stage1: Stage1Result,
                    model: Stage2Model, applied: AppliedSelection, on_progress=None) -> pd.DataFrame:
    """The evaluation table of a run just selected.

    Every tile (read back from the staged parts, in their order) and its embedding from stage 2's
    ``model``, the final decisions, and the candidates of the ``applied`` selection.
    """
    from .runs.tiletable import read_tiles
    from .runs.vocabulary import status_code

    if model.scratch is None or plan.parts is None:
        raise ValueError("evaluation needs every tile embedded in the run's staged parts")
    tiles = read_tiles(plan.parts)
    positions = np.concatenate([plan.grid.task_positions(t) for t in plan.grid.tasks])
    row_of = np.full(len(columns), -1, dtype=np.int64)
    row_of[positions] = np.arange(positions.size)
    kept = columns.status[positions] == status_code(Status.KEPT)
    bank = model.bank if isinstance(model.bank, PriorBank) else None
    return evaluate_run(tiles, np.asarray(model.scratch.array[positions]), kept, row_of[applied.pool],
                        applied.pool_cluster, applied.pool_distance, model.centroids, options, stage1.budget,
                        plan.sources, stage1.scalings, on_progress=on_progress, bank=bank)
