"""Re-select a finished run (new keep ratio, quotas or seed) from its GeoPackage or run folder.

In seconds: no pixel is read, nothing is encoded, and a run folder is read column by column.
"""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
from rasterio.crs import CRS

from .choices import CellPeriod, GeoSpread, Stage1Rule
from .engine.columns import TileColumns
from .errors import InputError, param
from .outputs.geopackage import write_geopackage
from .outputs.runfolder import check_output, write_gpkg_from_parts
from .outputs.temporaries import new_folder, replace_folder
from .reading.ground import GroundGrid, parse_cells
from .runs.inputs import INPUTS_FILE, is_table, table_frames
from .runs.record import RunRecord, Stage2Record
from .runs.result import RunResult
from .runs.runfile import (
    FOLDER_GEOPACKAGE,
    LAYER_FILES,
    TILES_FOLDER,
    read_layer,
    read_record,
    read_run,
    read_run_columns,
)
from .runs.tiletable import Decisions, apply_decisions, part_paths, update_part
from .runs.vocabulary import Reason, ReasonContext, Status, status_code
from .stages.budget import Budget
from .stages.selection import HeldBefore, SelectionOptions, apply_selection
from .stages.stage2 import held_before

#: The columns a re-selection reads.
COLUMNS = ("tile_id", "status", "entropy", "entropy_rank", "ground_cell", "date")
STAGE2_COLUMNS = ("cluster", "centroid_distance", "cluster_rank", "scene_entropy_rank")


def reselect(
    run_file: str | Path,
    output: str | Path | None,
    keep: float,
    uniformity: float | None = None,
    spread: int | None = None,
    seed: int | None = None,
    overwrite: bool = False,
    max_per_cell: int | None = None,
    cell_period: CellPeriod | str | None = None,
    geo_spread: GeoSpread | str | None = None,
) -> RunResult:
    """A new selection from the clusters, distances and entropy ranks stored in a run.

    No pixel is read and nothing is encoded. Stage-1 candidates follow the run's rule and
    ``stage1_keep``: under ``paper`` a keep ratio at or above it is decided by stage 1 alone;
    under ``bank`` the within-scene cut is taken again from the stored scenes and entropies.
    Near-duplicates found by the run stay duplicates. The selection is applied by
    :func:`~rsprune_geo.stages.selection.apply_selection`, as in a run.

    Args:
        run_file: the run's GeoPackage or run folder.
        output: a GeoPackage, or a run folder for a run folder; ``None`` for ``run_file`` itself
            (with ``overwrite``).
        keep: the fraction of the tiles with data to keep, as a run counts it.
        uniformity: as in a run; ``None`` for the run's.
        spread: distance bins; ``None`` for the run's.
        seed: ``None`` for the run's.
        overwrite: replace an existing output.
        max_per_cell: ``None`` for the run's; 0 removes the run's cap.
        cell_period: ``None`` for the run's.
        geo_spread: ``None`` for the run's.

    Returns:
        The re-selected run.

    Raises:
        InputError: ``run_file`` is not a run, ``output`` is the run without ``overwrite``, or a
            parameter is out of range.
    """
    source, target = Path(run_file), Path(output) if output else Path(run_file)
    record = read_record(source)
    if target.resolve() == source.resolve() and not overwrite:
        raise InputError(f"{run_file}: give {param('output')} NEW.gpkg (or a new folder), or {param('overwrite')} to "
                         "replace the run")
    if not source.is_dir() and target.suffix.lower() != ".gpkg":
        raise InputError(f"{target}: a run written as a GeoPackage is re-selected into a GeoPackage (.gpkg)")
    config = record.config(keep=keep, **{k: v for k, v in dict(
        uniformity=uniformity, spread=spread, seed=seed, max_per_cell=max_per_cell, cell_period=cell_period,
        geo_spread=geo_spread).items() if v is not None}).validated()
    options = replace(SelectionOptions.from_config(config), max_per_cell=config.max_per_cell or None)
    stage2 = record.stage2
    frame = read_run_columns(source, COLUMNS + (STAGE2_COLUMNS if stage2 is not None else ()))
    columns = _columns(frame)
    budget = Budget.of(config, columns.tiles_with_data())
    rule = Stage1Rule.parse(record.stage1.rule if record.stage1 else Stage1Rule.PAPER, "stage1")
    clusters = None
    context = ReasonContext(budget=budget.keep_count, dedup=options.dedup, max_per_cell=options.max_per_cell,
                            period=options.cell_period)
    if stage2 is not None and (rule is Stage1Rule.BANK or budget.keep_fraction < budget.stage1_fraction):
        clusters = read_layer(source, "clusters")
        stage2 = _select_again(frame, columns, clusters, rule, budget, options, stage2, context, record)
    else:  # stage 1 alone decides: the top of the entropy ranking
        _entropy_top(columns, budget.keep_count)
    params = replace(record.parameters, keep=keep, uniformity=options.uniformity, spread=options.spread,
                     seed=options.seed, max_per_cell=options.max_per_cell or 0, cell_period=options.cell_period,
                     geo_spread=options.geo_spread)
    run_id, created = RunRecord.now()
    warnings = [w for w in record.warnings if not Budget.is_note(w)] + budget.notes()
    new_record = record.updated(parameters=params, stage2=stage2, reselected_from=str(run_file), run_id=run_id,
                                created=created, counts=columns.counts(), warnings=warnings)
    layers = {"clusters": clusters} if clusters is not None else {}
    decisions = _decisions(columns, stage2 is not None)
    if target.suffix.lower() != ".gpkg":
        written = _write_folder(source, target, decisions, context, new_record, layers, config.gpkg_max_tiles,
                                overwrite)
    else:
        written = _write_gpkg(source, target, decisions, context, new_record, layers, overwrite)
    return RunResult(record=new_record, output=written, clusters=clusters)


def _columns(frame: pd.DataFrame) -> TileColumns:
    """A run's stored tiles as the columns selection works on (one position a row).

    Reasons marked unchanged until the re-selection decides a tile again.
    """
    dates = pd.to_datetime(frame["date"]) if "date" in frame else pd.Series(pd.NaT, index=frame.index)
    codes, uniques = pd.factorize(dates)
    columns = TileColumns.empty(len(frame), np.asarray(uniques, dtype="datetime64[ns]"))
    columns.status[:] = [status_code(s) for s in frame["status"]]
    columns.reason[:] = Reason.UNCHANGED
    columns.entropy[:] = frame["entropy"].to_numpy(dtype=np.float64)
    columns.entropy_rank[:] = frame["entropy_rank"].to_numpy()
    columns.cell[:] = parse_cells(frame["ground_cell"].fillna("").to_numpy())
    columns.date_code[:] = codes
    if "cluster" in frame:
        columns.cluster[:] = frame["cluster"].to_numpy()
        columns.distance[:] = frame["centroid_distance"].to_numpy(dtype=np.float32)
        columns.scene_rank[:] = frame["scene_entropy_rank"].to_numpy()
    return columns


def _select_again(frame: pd.DataFrame, columns: TileColumns, clusters: pd.DataFrame, rule: Stage1Rule,
                  budget: Budget, options: SelectionOptions, stage2: Stage2Record,
                  context: ReasonContext, record: RunRecord) -> Stage2Record:
    """Stage 2's selection again on the stored candidates (in ``columns`` and ``clusters``).

    Returns the updated stage-2 record and completes the reasons' ``context``.
    """
    if rule is Stage1Rule.BANK:  # the tiles over the bank's floor, with a scene
        candidates = np.flatnonzero(columns.scene_rank >= 1)
        columns.scene_rank[:] = 0
    else:
        candidates = np.flatnonzero((columns.entropy_rank >= 1) & (columns.entropy_rank <= budget.stage1_count))
    duplicates = columns.status[candidates] == status_code(Status.DUPLICATE)
    columns.cluster_rank[:] = -1
    order = np.argsort(np.argsort(frame["tile_id"].to_numpy(), kind="stable"), kind="stable")
    held = _held(stage2, record) if stage2.extends else None
    applied = apply_selection(columns, candidates, clusters["scene"].to_numpy(), budget.keep_count, options,
                              lambda positions: order[positions], scene_cut=budget.scene_cut, duplicates=duplicates,
                              held=held)
    clusters["quota"], clusters["size"], clusters["kept"] = applied.quota, applied.size, applied.kept_per_cluster
    context.cluster_quota = applied.quota.tolist()
    context.cluster_scene = [str(s) for s in clusters["scene"]]
    context.scene_quota = applied.scene_quota
    return replace(stage2, budget=budget.keep_count, kept=applied.kept, uniformity=options.uniformity,
                   spread=options.spread, stage1_passed=int(applied.pool.size),
                   stage1_decides=applied.stage1_decides)


def _held(stage2: Stage2Record, record: RunRecord) -> HeldBefore:
    """What the run an extension extends kept, placed in this run's ground grid (its record's)."""
    ground = record.ground
    origin = (float(ground.origin[0]), float(ground.origin[1])) if ground and ground.origin else (np.nan, np.nan)
    grid = GroundGrid(ground.cell_size if ground and ground.cell_size else float("nan"), origin)
    return held_before(str(stage2.extends), CRS.from_user_input(record.crs) if record.crs else None, grid)


def _entropy_top(columns: TileColumns, count: int) -> None:
    """Keep the ``count`` tiles at the top of stage 1's entropy ranking."""
    ranked = np.flatnonzero(columns.entropy_rank >= 1)
    top = columns.entropy_rank[ranked] <= count
    columns.mark(ranked[top], Status.KEPT)
    columns.mark(ranked[~top], Status.LOW_INFORMATION, Reason.ENTROPY_TOP)
    columns.cluster_rank[:] = -1


def _decisions(columns: TileColumns, with_stage2: bool) -> Decisions:
    """The re-selection's decisions, for every tile in table order."""
    d = Decisions(columns.status, columns.reason, columns.entropy_rank)
    if with_stage2:
        d.cluster, d.distance = columns.cluster, columns.distance
        d.cluster_rank, d.scene_rank = columns.cluster_rank, columns.scene_rank
    return d


def _write_gpkg(source: Path, target: Path, decisions: Decisions, context: ReasonContext, record: RunRecord,
                layers: dict[str, pd.DataFrame], overwrite: bool) -> Path:
    """The re-selected run as a GeoPackage.

    The whole table rewritten (a GeoPackage is for runs small enough to want one).
    """
    tiles, _ = read_run(source)
    tiles = gpd.GeoDataFrame(tiles.drop(columns="geometry"), geometry=tiles.geometry.values, crs=tiles.crs)
    tiles = apply_decisions(tiles, decisions, context)
    return write_geopackage(target, tiles, record.to_table(), layers, overwrite=overwrite,
                            inputs=table_frames(record.inputs))


def _write_folder(source: Path, target: Path, decisions: Decisions, context: ReasonContext, record: RunRecord,
                  layers: dict[str, pd.DataFrame], gpkg_max_tiles: int, overwrite: bool) -> Path:
    """The re-selected run as a run folder.

    The parts copied and updated one by one, the record and layers written, a GeoPackage when the run is
    small enough; renamed into place.
    """
    if target.resolve() != source.resolve():
        check_output(target, overwrite)
    staging = new_folder(target.parent)
    try:
        (staging / TILES_FOLDER).mkdir()
        start = 0
        for path in part_paths(source / TILES_FOLDER):
            copy = staging / TILES_FOLDER / path.name
            shutil.copy2(path, copy)
            n = len(pd.read_parquet(copy, columns=["tile_id"]))
            update_part(copy, decisions.rows(slice(start, start + n)), context)
            start += n
        record.write_json(staging)
        for name, frame in layers.items():
            frame.to_parquet(staging / LAYER_FILES[name], index=False)
        if sum(record.counts.values()) <= gpkg_max_tiles:
            write_gpkg_from_parts(str(staging / FOLDER_GEOPACKAGE), str(staging / TILES_FOLDER), record.to_table(),
                                  layers, True, str(staging / INPUTS_FILE) if is_table(record.inputs) else None)
        replace_folder(staging, target)  # the old run stays whole until the new one is in place
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target
