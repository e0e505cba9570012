"""Re-select a finished run (new keep ratio, quotas or seed) from its GeoPackage, in seconds."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio

from .config import Stage1Rule
from .errors import InputError, param
from .outputs.geopackage import write_geopackage
from .result import RunResult
from .schema import RunRecord, Stage2Record, Status, read_run, status_counts
from .stages.budget import Budget, tiles_with_data
from .stages.selection import SelectionOptions, apply_selection


def reselect(
    run_file: str | Path,
    output: str | Path | None,
    keep: float,
    uniformity: float | None = None,
    spread: int | None = None,
    seed: int | None = None,
    overwrite: bool = False,
    max_per_cell: int | None = None,
    cell_period: str | None = None,
    geo_spread: str | None = None,
) -> RunResult:
    """A new selection from the clusters, distances and entropy ranks stored in ``run_file``.

    No pixel is read and nothing is encoded; ``keep`` counts the tiles with data, as a run does.
    Stage-1 candidates follow the run's rule and ``stage1_keep``: under ``paper`` a keep ratio
    at or above it is decided by stage 1 alone; under ``bank`` the within-scene cut is taken
    again from the stored scenes and entropies. Near-duplicates found by the run stay duplicates.
    The selection is applied by :func:`~rsprune_geo.stages.selection.apply_selection`, as in a run.
    ``uniformity``, ``spread``, ``seed``, ``max_per_cell``, ``cell_period`` and ``geo_spread``
    default to the run's; ``max_per_cell=0`` removes the run's cap.
    """
    target = Path(output) if output else Path(run_file)
    if target.resolve() == Path(run_file).resolve() and not overwrite:
        raise InputError(f"{run_file}: give {param('output')} NEW.gpkg, or {param('overwrite')} to replace the "
                         "run file")
    tiles, record = read_run(run_file)
    config = record.config(keep=keep, **{k: v for k, v in dict(
        uniformity=uniformity, spread=spread, seed=seed, max_per_cell=max_per_cell, cell_period=cell_period,
        geo_spread=geo_spread).items() if v is not None}).validated()
    options = replace(SelectionOptions.from_config(config), max_per_cell=config.max_per_cell or None)
    status = tiles["status"].to_numpy(dtype=object).copy()
    budget = Budget.of(config, tiles_with_data(status))
    rule = Stage1Rule.parse(record.stage1.rule if record.stage1 else Stage1Rule.PAPER, "stage1")
    clusters = None
    stage2 = record.stage2
    if stage2 is not None and (rule is Stage1Rule.BANK or budget.keep_fraction < budget.stage1_fraction):
        clusters = pyogrio.read_dataframe(run_file, layer="clusters")
        stage2 = _select_again(tiles, clusters, rule, budget, options, stage2)
    else:  # stage 1 alone decides: the top of the entropy ranking
        _entropy_top(tiles, budget.keep_count)
    params = dict(record.parameters, keep=keep, uniformity=options.uniformity, spread=options.spread,
                  seed=options.seed, max_per_cell=options.max_per_cell or 0, cell_period=options.cell_period.value,
                  geo_spread=options.geo_spread.value)
    run_id, created = RunRecord.now()
    new_record = record.updated(parameters=params, stage2=stage2, reselected_from=str(run_file), run_id=run_id,
                                created=created, counts=status_counts(tiles["status"]))
    extra = {"clusters": clusters} if clusters is not None else {}
    tiles = gpd.GeoDataFrame(tiles.drop(columns="geometry"), geometry=tiles.geometry.values, crs=tiles.crs)
    written = write_geopackage(target, tiles, new_record.to_table(), extra, overwrite=overwrite)
    return RunResult(tiles=tiles, record=new_record, output=written, clusters=clusters)


def _select_again(tiles: gpd.GeoDataFrame, clusters: pd.DataFrame, rule: Stage1Rule, budget: Budget,
                  options: SelectionOptions, stage2: Stage2Record) -> Stage2Record:
    """Stage 2's selection again on the stored candidates (in place on ``tiles`` and ``clusters``);
    returns the updated stage-2 record."""
    status = tiles["status"].to_numpy(dtype=object)
    if rule is Stage1Rule.BANK:  # the tiles over the bank's floor, with a scene
        candidates = np.flatnonzero(tiles["scene_entropy_rank"].to_numpy() >= 1)
    else:
        rank = tiles["entropy_rank"].to_numpy()
        candidates = np.flatnonzero((rank >= 1) & (rank <= budget.stage1_count))
    applied = apply_selection(
        tiles, candidates, tiles["cluster"].to_numpy()[candidates], tiles["centroid_distance"].to_numpy()[candidates],
        clusters["scene"].to_numpy(), budget.keep_count, options, scene_cut=budget.scene_cut,
        duplicates=status[candidates] == Status.DUPLICATE,
    )
    tiles["status"], tiles["reason"] = applied.status, applied.reason
    tiles["cluster_rank"] = applied.cluster_rank
    if rule is Stage1Rule.BANK:
        tiles["scene_entropy_rank"] = applied.scene_entropy_rank
    clusters["quota"], clusters["size"], clusters["kept"] = applied.quota, applied.size, applied.kept_per_cluster
    return replace(stage2, budget=budget.keep_count, kept=int(applied.kept.sum()), uniformity=options.uniformity,
                   spread=options.spread, seed=options.seed, stage1_passed=int(applied.pool.size),
                   stage1_decides=applied.stage1_decides)


def _entropy_top(tiles: gpd.GeoDataFrame, count: int) -> None:
    """Keep the ``count`` tiles at the top of stage 1's entropy ranking (in place)."""
    status = tiles["status"].to_numpy(dtype=object).copy()
    reason = tiles["reason"].fillna("").to_numpy(dtype=object).copy()
    rank = tiles["entropy_rank"].to_numpy()
    ranked = rank >= 1
    status[ranked] = np.where(rank[ranked] <= count, Status.KEPT, Status.LOW_INFORMATION)
    reason[ranked] = ""
    reason[ranked & (rank > count)] = f"entropy under the stage-1 cut (top {count})"
    tiles["status"], tiles["reason"] = status, reason
    if "cluster_rank" in tiles:
        tiles["cluster_rank"] = -1

