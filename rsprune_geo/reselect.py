"""Re-select a finished run (new keep ratio, quotas or seed) from its GeoPackage, in seconds."""

from __future__ import annotations

import datetime as _dt
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio

from .errors import InputError
from .information import (
    PAPER_STAGE1_KEEP,
    STATUS_KEPT,
    STATUS_LOW_INFORMATION,
    STATUS_NODATA,
    stratified_entropy_cut,
    within_scene_cut_reasons,
)
from .outputs import read_run, write_geopackage
from .pipeline import RunResult, runs_table
from .selection import select_tiles
from .stage2 import STATUS_DUPLICATE, STATUS_NOT_SELECTED


def reselect(
    run_file: str | Path,
    output: str | Path | None = None,
    keep: float = 0.15,
    uniformity: float | None = None,
    spread: int | None = None,
    seed: int | None = None,
    overwrite: bool = False,
) -> RunResult:
    """A new selection from the clusters, distances and entropy ranks stored in ``run_file``.

    No pixel is read and nothing is encoded; ``keep`` counts the tiles with data, as a run does.
    Stage-1 candidates follow the run's rule and ``--stage1-keep``: under ``paper`` a keep ratio
    at or above it is decided by stage 1 alone; under ``bank`` the within-scene cut is taken
    again from the stored scenes and entropies. Near-duplicates found by the run stay duplicates.
    """
    if not 0 < keep <= 1:
        raise InputError(f"--keep {keep}: must be in (0, 1]")
    tiles, record = read_run(run_file)
    params = dict(record["parameters"])
    stage2 = record.get("stage2") or None
    rule = (record.get("stage1") or {}).get("rule", "paper")
    uniformity = params.get("uniformity", 1.0) if uniformity is None else uniformity
    spread = params.get("spread", 1) if spread is None else spread
    seed = params.get("seed", 0) if seed is None else seed
    status = tiles["status"].to_numpy(dtype=object).copy()
    reason = tiles["reason"].fillna("").to_numpy(dtype=object).copy()
    n_data = int((status != STATUS_NODATA).sum())
    budget = round(keep * n_data)
    rank = tiles["entropy_rank"].to_numpy()
    ranked = rank >= 1
    stage1_keep = params.get("stage1_keep")
    if stage1_keep is None:
        stage1_keep = 1.0 if rule == "bank" else PAPER_STAGE1_KEEP
    clusters = None
    if rule == "bank" and stage2 is not None:
        scene_rank = tiles["scene_entropy_rank"].to_numpy()
        cand = np.flatnonzero(scene_rank >= 1)  # the tiles over the bank's floor, with a scene
        count = max(round(stage1_keep * n_data), budget)
        passed, _, quota = stratified_entropy_cut(tiles["entropy"].to_numpy()[cand], tiles["scene"].to_numpy()[cand],
                                                  count, tiles["tile_id"].to_numpy()[cand])
        cut = cand[~passed]
        status[cut] = STATUS_LOW_INFORMATION
        reason[cut] = within_scene_cut_reasons(tiles["entropy"].to_numpy()[cut], tiles["scene"].to_numpy()[cut],
                                               quota[~passed])
        candidates = np.zeros(len(tiles), dtype=bool)
        candidates[cand[passed]] = True
        if budget >= int(passed.sum()):
            status[cand[passed]] = STATUS_KEPT
            reason[cand[passed]] = ""
            tiles["cluster_rank"] = -1
        else:
            clusters, stage2 = _select(tiles, run_file, candidates, status, reason, budget, uniformity, spread,
                                       seed, params.get("quota_by", "centroid"), stage2)
    elif stage2 is None or keep >= stage1_keep:
        status[ranked] = np.where(rank[ranked] <= budget, STATUS_KEPT, STATUS_LOW_INFORMATION)
        cut = ranked & (rank > budget)
        reason[ranked] = ""
        reason[cut] = f"entropy under the stage-1 cut (top {budget})"
        if "cluster_rank" in tiles:
            tiles["cluster_rank"] = -1
    else:
        n_candidates = round(stage1_keep * n_data)
        candidates = ranked & (rank <= n_candidates)
        clusters, stage2 = _select(tiles, run_file, candidates, status, reason, budget, uniformity, spread, seed,
                                   params.get("quota_by", "centroid"), stage2)
    tiles["status"] = status
    tiles["reason"] = reason
    params.update(keep=keep, uniformity=uniformity, spread=spread, seed=seed)
    new_record = dict(record)
    new_record.update(
        parameters=params,
        stage2=stage2,
        reselected_from=str(run_file),
        created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        counts={str(k): int(v) for k, v in pd.Series(status).value_counts().items()},
    )
    target = Path(output) if output else Path(run_file)
    if target.resolve() == Path(run_file).resolve() and not overwrite:
        raise InputError(f"{run_file}: give -o NEW.gpkg, or --overwrite to replace the run file")
    extra = {"clusters": clusters} if clusters is not None else {}
    geometry = tiles.geometry
    tiles = gpd.GeoDataFrame(tiles.drop(columns="geometry"), geometry=geometry.values, crs=tiles.crs)
    written = write_geopackage(target, tiles, runs_table(new_record), extra, overwrite=overwrite)
    return RunResult(tiles=tiles, record=new_record, output=written, clusters=clusters)


def _select(tiles, run_file, candidates, status, reason, budget, uniformity, spread, seed, quota_by, stage2):
    """Stage 2's selection among ``candidates`` (near-duplicates excluded), written into
    ``status``/``reason`` and ``tiles["cluster_rank"]``; returns (clusters table, stage-2 record)."""
    fresh = np.flatnonzero(candidates & (status != STATUS_DUPLICATE))
    cluster = tiles["cluster"].to_numpy()
    clusters = pyogrio.read_dataframe(run_file, layer="clusters")
    scenes = clusters["scene"].to_numpy() if quota_by == "scene" else None
    sel = select_tiles(cluster[fresh], tiles["centroid_distance"].to_numpy()[fresh], budget, uniformity, spread,
                       seed, cluster_scenes=scenes)
    status[fresh] = STATUS_NOT_SELECTED
    status[fresh[sel.kept]] = STATUS_KEPT
    reason[fresh] = ""
    quota_of = dict(zip(sel.clusters.tolist(), sel.quotas.tolist()))
    not_sel = fresh[~sel.kept]
    reason[not_sel] = [f"beyond the quota of cluster {c} ({quota_of[c]})" for c in cluster[not_sel]]
    cluster_rank = np.full(len(tiles), -1, dtype=np.int64)
    cluster_rank[fresh] = sel.rank
    tiles["cluster_rank"] = cluster_rank
    quotas = np.zeros(len(clusters), dtype=np.int64)
    quotas[sel.clusters] = sel.quotas
    clusters["quota"] = quotas
    clusters["size"] = np.bincount(cluster[candidates], minlength=len(clusters))
    clusters["kept"] = np.bincount(cluster[fresh[sel.kept]], minlength=len(clusters))
    stage2 = dict(stage2, budget=int(budget), kept=int(sel.kept.sum()), uniformity=uniformity, spread=spread,
                  seed=seed)
    return clusters, stage2
