"""The whole run behind one call.

Sources → tile grid → stage 1 (every window read once) → stage 2 → decisions written back to the
tile table → a GeoPackage or a run folder.
"""

from __future__ import annotations

import logging
import platform
import time
from collections.abc import Sequence
from dataclasses import replace
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from rasterio.crs import CRS

from .bank.profile import BankProfile, open_bank
from .choices import Stage1Rule
from .config import RunConfig, resolve_crs
from .engine.columns import TileColumns
from .engine.plan import RunPlan
from .engine.scaleout import dask_client, release_freed_memory
from .engine.window import Encode
from .errors import InputError, SkippedInput, counted, param
from .evaluation import EvaluationOptions, evaluate_stage2
from .outputs.runfolder import Staging, check_output, finish, load_tiles, write_decisions
from .progress import ProgressCallback, no_progress
from .reading.dates import SourceDates, source_dates
from .reading.grid import RunGrid, plan_grid
from .reading.ground import ground_grid
from .reading.pixels import Scaling
from .reading.remote import has_credentials, redact
from .reading.scan import SourceTable, distinct, scan_sources
from .reading.sources import RasterSource
from .runs.inputs import InputDates, InputEntry, SourceInputs, is_table
from .runs.record import GroundRecord, RunRecord
from .runs.result import RunResult
from .runs.vocabulary import ReasonContext
from .stages.stage1 import Stage1Options, Stage1Result, matched_to_bank, run_stage1
from .stages.stage2 import Stage2Model, Stage2Options, Stage2Result, prepare_model, run_stage2

log = logging.getLogger(__name__)


def output_crs(sources: Sequence[RasterSource], requested: str | None = None) -> CRS | None:
    """The CRS of the output: the requested one, else the sources' common CRS, else EPSG:4326."""
    if requested:
        return resolve_crs(requested)
    crss = distinct(sources, "crs")
    if any(c is None for c in crss):
        return None
    first = crss[0]
    if all(c == first for c in crss[1:]):
        return first
    return CRS.from_epsg(4326)


def package_versions() -> dict[str, str]:
    """Versions of the packages a run depends on, for the ``runs`` table."""
    names = ["rsprune_geo", "numpy", "rasterio", "geopandas", "pyogrio", "shapely", "dask", "pandas"]
    out = {"python": platform.python_version()}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    try:
        import rasterio

        out["gdal"] = rasterio.__gdal_version__
    except Exception:  # pragma: no cover
        pass
    return out


def plan_tiles(sources: Sequence[RasterSource], config: RunConfig) -> RunGrid:
    """The run's tile grid (see :func:`~rsprune_geo.reading.grid.plan_grid`), logged."""
    grid = plan_grid(sources, config.tile_size, config.stride, config.edge, config.chips, config.aoi, config.group_px)
    log.info("tiling: %s of %d px from %s, edge %s", counted(grid.count, "tile"), config.tile_size,
             counted(len(sources), "source"), config.edge)
    return grid


def run(
    inputs: Sequence[str] | str,
    output: str | Path | None = None,
    config: RunConfig | None = None,
    overwrite: bool = False,
    on_progress: ProgressCallback | None = None,
    **overrides: Any,
) -> RunResult:
    """Run both stages on rasters and, when ``output`` is given, write the result.

    The run prints nothing; it logs through :mod:`logging`. With ``dask_address`` or
    ``workers``, the per-tile work (reading, stage 1, encoding) runs on a Dask cluster.

    Example:
        ``run("mosaic.tif", "out.gpkg", tile_size=512, keep=0.15)``

    Args:
        inputs: paths, globs, folders or STAC catalogues.
        output: a GeoPackage (``.gpkg``) or a run folder; ``None`` writes nothing.
        config: the run's parameters; ``overrides`` set its fields.
        overwrite: replace an existing output (kept whole until the new one is in place).
        on_progress: called as ``on_progress(stage, done, total)``; the stages are ``tiling``,
            ``stage1``, ``prior_bank``, ``encoding``, ``selection``, ``evaluation``, ``writing``.
        **overrides: :class:`RunConfig` fields.

    Returns:
        The tiles with their decisions, the run's record and where it was written.

    Raises:
        InputError: an input, a parameter or the output is unusable; the message says which.
        OutputError: the output could not be written.
    """
    config = config or RunConfig()
    for key in overrides:
        if not hasattr(config, key):
            raise InputError(f"unknown parameter {key!r}")
    config = replace(config, **overrides).validated()
    check_output(output, overwrite)
    inputs = [inputs] if isinstance(inputs, (str, Path)) else list(inputs)
    with dask_client(config.dask_address, config.workers) as client:
        return _run(inputs, output, config, overwrite, client, on_progress or no_progress)


def _run(inputs: list[str], output: str | Path | None, config: RunConfig, overwrite: bool, client: Any,
         on_progress: ProgressCallback) -> RunResult:
    """The run, stage by stage.

    Sources and tile grid, the prior bank, stage 1 (one read of every window), stage 2, the decisions
    written back to the tile table, the record, the output.
    """
    timings: dict[str, float] = {}
    on_progress("tiling", 0, 1)
    t0 = time.perf_counter()
    sources, skipped = scan_sources(inputs, config.bands, config.allow_no_crs, config.chips, config.strict, client,
                                    config.asset)
    crs = output_crs(sources, config.out_crs)
    if crs is not None and any(c is None for c in distinct(sources, "crs")):
        raise InputError(f"{param('out_crs')} needs georeferenced rasters (the inputs have no CRS)")
    bank, bank_skipped = open_bank(config.prior_bank, config.cache_dir) if config.prior_bank else (None, [])
    if config.evaluate and isinstance(bank, BankProfile):
        raise InputError(f"{param('evaluate')} embeds the prior bank's images with a second encoder: give the bank "
                         "folder, not a profile")
    if config.match_bank_scale:
        assert bank is not None
        config = matched_to_bank(config, bank, sources)
    grid = plan_tiles(sources, config)
    grid.dates, ground = dates_and_ground(grid, crs, config.date_pattern)
    release_freed_memory()  # what scanning, planning and dating freed (about 45 bytes a chip), before stage 1
    timings["tiling"] = time.perf_counter() - t0
    on_progress("tiling", 1, 1)
    staging = Staging.start(output)
    model = None
    try:
        plan = RunPlan(grid, crs, ground_grid(grid, crs), str(staging.parts), client,
                       redact=any(has_credentials(path) for path in _paths(sources)), scheduler=config.scheduler)
        options = Stage1Options.from_config(config)
        columns = TileColumns.empty(grid.size, grid.dates.values)
        columns.date_code[:] = np.repeat(grid.dates.code, grid.sizes())
        stage2_options = Stage2Options.from_config(config) if options.budget.stage2 else None
        if stage2_options is not None:
            assert bank is not None
            if config.evaluate:
                EvaluationOptions.from_config(config).check_encoder()
            model = prepare_model(bank, stage2_options, grid.size, on_progress)
        single = model is not None and (options.rule is Stage1Rule.BANK or config.evaluate)
        encoding = model.encoding(Encode.ALL if config.evaluate else Encode.PASSED) if single and model else None
        stage1 = run_stage1(plan, options, columns, bank, encoding, on_progress)
        timings.update(stage1.timings)
        release_freed_memory()  # what stage 1's readers and encoder freed, before the driver's next peak
        context = ReasonContext(max_nodata=config.max_nodata, entropy_min=config.entropy_min,
                                floor=stage1.floor.bits if stage1.floor is not None else None,
                                cut_bits=stage1.cut[0], cut_count=stage1.cut[1])
        stage2 = evaluation = None
        if stage2_options is not None and stage1.budget.stage2:
            assert model is not None
            stage2 = run_stage2(plan, stage2_options, columns, stage1, model, on_progress)
            context = replace(stage2.context, max_nodata=context.max_nodata, entropy_min=context.entropy_min,
                              floor=context.floor, cut_bits=context.cut_bits, cut_count=context.cut_count)
            stage2.record.bank_skipped = bank_skipped
            timings.update(stage2.timings)
            if config.evaluate:
                evaluation = _evaluate(plan, config, columns, stage1, model, stage2, timings, on_progress)
        ground.cells = columns.cells_count()
        record = make_record(sources, stage1.scalings, config, crs, timings, columns, grid.dates, ground)
        record.stage1, record.stage2 = stage1.record, stage2.record if stage2 else None
        record.skipped = [SkippedInput(path=redact(item['path']), error=redact(item['error'])) for item in skipped]
        record.warnings = _bank_warnings(bank_skipped) + stage1.warnings
        return _write(staging, plan, columns, context, record, stage2, evaluation, timings, overwrite, config,
                      on_progress)
    except BaseException:
        staging.discard()
        raise
    finally:
        if model is not None:
            model.close()


def _bank_warnings(bank_skipped: list[SkippedInput]) -> list[str]:
    """The run record's warning about unreadable prior-bank images, if any."""
    if not bank_skipped:
        return []
    return [f"prior bank: {counted(len(bank_skipped), 'unreadable image')} skipped, e.g. {bank_skipped[0]['path']}"]


def _evaluate(plan: RunPlan, config: RunConfig, columns: TileColumns, stage1: Stage1Result, model: Stage2Model,
              stage2: Stage2Result, timings: dict[str, float], on_progress: ProgressCallback) -> pd.DataFrame:
    """The run's evaluation (``evaluate``), after stage 2 and apart from it."""
    t0 = time.perf_counter()
    on_progress("evaluation", 0, 1)
    table = evaluate_stage2(plan, EvaluationOptions.from_config(config), columns, stage1, model, stage2.applied,
                            on_progress)
    timings["evaluation"] = time.perf_counter() - t0
    return table


def _write(staging: Staging, plan: RunPlan, columns: TileColumns, context: ReasonContext, record: RunRecord,
           stage2: Stage2Result | None, evaluation: pd.DataFrame | None, timings: dict[str, float], overwrite: bool,
           config: RunConfig, on_progress: ProgressCallback) -> RunResult:
    """Write the decisions back to the tile table and give the output asked for.

    A GeoPackage, a run folder, or, without one, the tiles in memory.
    """
    t0 = time.perf_counter()
    on_progress("writing", 0, 1)
    write_decisions(staging, plan.grid, columns, context, stage2 is not None, plan.client, on_progress)
    release_freed_memory()
    layers: dict[str, pd.DataFrame] = {"clusters": stage2.clusters} if stage2 is not None else {}
    if evaluation is not None:
        layers["evaluation"] = evaluation.reset_index()
    timings["write"] = time.perf_counter() - t0
    record.timings = dict(timings)
    tiles = load_tiles(staging) if staging.output is None else None
    output = finish(staging, record, layers, overwrite, config.gpkg_max_tiles, plan.client)
    if output is None:
        staging.discard()
    on_progress("writing", 1, 1)
    return RunResult(record=record, output=output, timings=timings, clusters=stage2.clusters if stage2 else None,
                     evaluation=evaluation, tiles=tiles)


def dates_and_ground(grid: RunGrid, crs: CRS | None, date_pattern: str | None = None
                     ) -> tuple[SourceDates, GroundRecord]:
    """Each source's acquisition date and the record of the run's ground.

    Dates come from :func:`~rsprune_geo.reading.dates.acquisition_date` (NaT when unknown); they are
    the record's inputs' (:func:`make_record`). The ground is the common grid's cell size and origin
    (:func:`~rsprune_geo.reading.grid.ground_grid`).
    """
    dates = source_dates(_sources(grid), date_pattern)
    dated = dates.dated()
    if date_pattern and dated < len(dates):
        log.warning("%d of %s without a date (%s matched no file name, and no metadata gives one)",
                    len(dates) - dated, counted(len(dates), "raster"), param("date_pattern"))
    ground = ground_grid(grid, crs)
    record = GroundRecord(cell_size=None if np.isnan(ground.size) else ground.size,
                          origin=None if np.isnan(ground.origin[0]) else list(ground.origin))
    return dates, record


def _paths(sources: Sequence[RasterSource]):
    """The sources' paths (a table gives them without building its sources)."""
    return sources.paths() if isinstance(sources, SourceTable) else (s.path for s in sources)


def _sources(grid: RunGrid) -> Sequence[RasterSource]:
    """The grid's sources, in order (a run of chips: their table)."""
    return grid.chips.sources if grid.chips is not None else [g.source for g in grid.sources]


def input_entries(sources: Sequence[RasterSource], scalings: Sequence[Scaling]) -> list[InputEntry]:
    """The record's entry of each input.

    Path, fingerprint, key, CRS, size, bands, mask, stretch
    (:class:`~rsprune_geo.runs.inputs.SourceInputs`, as a list).
    """
    return list(SourceInputs(sources, scalings))


def make_record(sources: Sequence[RasterSource], scalings: Sequence[Scaling], config: RunConfig, crs: CRS | None,
                timings: dict[str, float], columns: TileColumns, dates: SourceDates | None = None,
                ground: GroundRecord | None = None) -> RunRecord:
    """The :class:`RunRecord` of a run.

    Parameters, versions, inputs with their stretch, counts, and its ``ground`` given each input's date.
    Beyond :data:`~rsprune_geo.runs.inputs.INLINE_INPUTS` inputs (a folder of chips) the inputs stay a
    view of the sources, written as a table of their own, and so do their dates.
    """
    inputs = SourceInputs(sources, scalings, dates)
    ground = ground or GroundRecord()
    ground.dates = (InputDates(inputs) if is_table(inputs)
                    else {entry["path"]: inputs.date_entry(i) for i, entry in enumerate(inputs)})
    run_id, created = RunRecord.now()
    return RunRecord(
        run_id=run_id,
        created=created,
        parameters=config,
        versions=package_versions(),
        crs=crs.to_string() if crs is not None else None,
        inputs=inputs if is_table(inputs) else list(inputs),
        counts=columns.counts(),
        timings=dict(timings),
        ground=ground,
    )
