"""Re-select a finished run (new keep ratio, quotas or seed) from its GeoPackage, in seconds."""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import numpy as np
import pyogrio

from .config import PAPER_STAGE1_KEEP, param
from .errors import InputError
from .outputs.geopackage import write_geopackage
from .result import RunResult
from .schema import RunRecord, Status, read_run, status_counts
from .stages.selection import SelectionOptions, apply_selection


def reselect(
    run_file: str | Path,
    output: str | Path | None = None,
    keep: float = 0.15,
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
    if not 0 < keep <= 1:
        raise InputError(f"{param('keep')} {keep}: must be in (0, 1]")
    if max_per_cell is not None and max_per_cell < 0:
        raise InputError(f"{param('max_per_cell')} {max_per_cell}: must be at least 0 (0: no cap)")
    target = Path(output) if output else Path(run_file)
    if target.resolve() == Path(run_file).resolve() and not overwrite:
        raise InputError(f"{run_file}: give {param('output')} NEW.gpkg, or {param('overwrite')} to replace the "
                         "run file")
    tiles, record = read_run(run_file)
    config = record.config()
    params = dict(record.parameters)
    stage2 = record.stage2 or None
    rule = (record.stage1 or {}).get("rule", "paper")
    options = SelectionOptions(
        uniformity=config.uniformity if uniformity is None else uniformity,
        spread=config.spread if spread is None else spread,
        seed=config.seed if seed is None else seed,
        quota_by=params.get("quota_by", "centroid"),
        dedup=config.dedup,
        max_per_cell=config.max_per_cell if max_per_cell is None else (max_per_cell or None),
        cell_period=config.cell_period if cell_period is None else cell_period,
        geo_spread=config.geo_spread if geo_spread is None else geo_spread,
    )
    status = tiles["status"].to_numpy(dtype=object).copy()
    n_data = int((status != Status.NODATA).sum())
    budget = round(keep * n_data)
    rank = tiles["entropy_rank"].to_numpy()
    ranked = rank >= 1
    stage1_keep = params.get("stage1_keep")  # the run's rule decides the default, as in the run
    if stage1_keep is None:
        stage1_keep = 1.0 if rule == "bank" else PAPER_STAGE1_KEEP
    clusters = None
    if stage2 is not None and (rule == "bank" or keep < stage1_keep):
        if rule == "bank":  # the tiles over the bank's floor, with a scene
            candidates = np.flatnonzero(tiles["scene_entropy_rank"].to_numpy() >= 1)
            stage1_count = round(stage1_keep * n_data)
        else:
            candidates = np.flatnonzero(ranked & (rank <= round(stage1_keep * n_data)))
            stage1_count = None
        clusters = pyogrio.read_dataframe(run_file, layer="clusters")
        cluster = tiles["cluster"].to_numpy()[candidates]
        applied = apply_selection(
            tiles, candidates, cluster, tiles["centroid_distance"].to_numpy()[candidates],
            clusters["scene"].to_numpy(), budget, options, stage1_count=stage1_count,
            duplicates=status[candidates] == Status.DUPLICATE,
        )
        tiles["status"], tiles["reason"] = applied.status, applied.reason
        tiles["cluster_rank"] = applied.cluster_rank
        if rule == "bank":
            tiles["scene_entropy_rank"] = applied.scene_entropy_rank
        clusters["quota"], clusters["size"], clusters["kept"] = applied.quota, applied.size, applied.kept_per_cluster
        stage2 = dict(stage2, budget=int(budget), kept=int(applied.kept.sum()), uniformity=options.uniformity,
                      spread=options.spread, seed=options.seed, stage1_passed=int(applied.pool.size),
                      stage1_decides=applied.stage1_decides)
    else:  # stage 1 alone decides: the top of the entropy ranking
        reason = tiles["reason"].fillna("").to_numpy(dtype=object).copy()
        status[ranked] = np.where(rank[ranked] <= budget, Status.KEPT, Status.LOW_INFORMATION)
        reason[ranked] = ""
        reason[ranked & (rank > budget)] = f"entropy under the stage-1 cut (top {budget})"
        tiles["status"], tiles["reason"] = status, reason
        if "cluster_rank" in tiles:
            tiles["cluster_rank"] = -1
    params.update(keep=keep, uniformity=options.uniformity, spread=options.spread, seed=options.seed,
                  max_per_cell=options.max_per_cell or 0, cell_period=options.cell_period,
                  geo_spread=options.geo_spread)
    run_id, created = RunRecord.now()
    new_record = record.updated(parameters=params, stage2=stage2, reselected_from=str(run_file), run_id=run_id,
                                created=created, counts=status_counts(tiles["status"]))
    extra = {"clusters": clusters} if clusters is not None else {}
    tiles = gpd.GeoDataFrame(tiles.drop(columns="geometry"), geometry=tiles.geometry.values, crs=tiles.crs)
    written = write_geopackage(target, tiles, new_record.to_table(), extra, overwrite=overwrite)
    return RunResult(tiles=tiles, record=new_record, output=written, clusters=clusters)
