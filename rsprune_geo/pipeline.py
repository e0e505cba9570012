"""The whole run: sources → tiling → stage 1 → (stage 2) → GeoPackage, behind one call."""

from __future__ import annotations

import logging
import platform
import time
from collections.abc import Sequence
from dataclasses import replace
from importlib import metadata
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
from rasterio.crs import CRS

from .config import RunConfig, resolve_crs
from .errors import InputError, param
from .outputs.geopackage import check_output_path, write_geopackage
from .progress import ProgressCallback, no_progress
from .reading.pixels import Scaling, has_credentials, redact
from .reading.sources import RasterSource, acquisition_date, scan_sources
from .reading.tiling import clip_to_aoi, ground_cells, make_tiles, read_aoi, whole_tile
from .result import RunResult
from .scaleout import dask_client
from .schema import GroundRecord, RunRecord, status_counts
from .stages.priorbank import load_prior_bank
from .stages.stage1 import Stage1Options, matched_to_bank, run_stage1
from .stages.stage2 import Stage2Options, run_stage2

log = logging.getLogger(__name__)


def output_crs(sources: Sequence[RasterSource], requested: str | None = None) -> CRS | None:
    """The CRS of the output: the requested one, else the sources' common CRS, else EPSG:4326."""
    if requested:
        return resolve_crs(requested)
    crss = [s.crs for s in sources]
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


def build_tiles(sources: Sequence[RasterSource], config: RunConfig) -> list[gpd.GeoDataFrame]:
    """Tile every source (each in its own CRS), restricted to the AOI when one is set."""
    aoi = read_aoi(config.aoi) if config.aoi else None
    if aoi is not None and any(s.crs is None for s in sources):
        raise InputError(f"{param('aoi')} needs georeferenced rasters (the inputs have no CRS)")
    if config.chips:
        tiles = [whole_tile(s) for s in sources]
        tiles = [clip_to_aoi(t, aoi) if aoi is not None else t for t in tiles]
    else:
        tiles = [make_tiles(s, config.tile_size, config.stride, config.edge, aoi) for s in sources]
    n_tiles = sum(len(t) for t in tiles)
    if n_tiles == 0:
        raise InputError("no tile to process: the area of interest misses every raster")
    log.info("tiling: %d tile(s) of %d px from %d source(s), edge %s", n_tiles, config.tile_size, len(sources),
             config.edge)
    return tiles


def run(
    inputs: Sequence[str] | str,
    output: str | Path | None = None,
    config: RunConfig | None = None,
    overwrite: bool = False,
    on_progress: ProgressCallback | None = None,
    **overrides: Any,
) -> RunResult:
    """Run the pipeline on rasters and (when ``output`` is given) write the GeoPackage.

    ``inputs``: paths, globs or folders. Keyword ``overrides`` set :class:`RunConfig` fields,
    e.g. ``run("mosaic.tif", "out.gpkg", tile_size=512, keep=0.15)``. With ``dask_address`` or
    ``workers`` the per-tile work (reading, stage 1, encoding) runs on a Dask cluster.
    ``on_progress(stage, done, total)`` is called as the run moves (stages ``tiling``,
    ``stage1``, ``prior_bank``, ``encoding``, ``selection``, ``evaluation``, ``writing``); the
    run itself prints nothing and logs through :mod:`logging`.
    """
    config = config or RunConfig()
    for key in overrides:
        if not hasattr(config, key):
            raise InputError(f"unknown parameter {key!r}")
    config = replace(config, **overrides).validated()
    if output is not None:
        check_output_path(output, overwrite)
    inputs = [inputs] if isinstance(inputs, (str, Path)) else list(inputs)
    with dask_client(config.dask_address, config.workers) as client:
        return _run(inputs, output, config, overwrite, client, on_progress or no_progress)


def _run(inputs: list[str], output: str | Path | None, config: RunConfig, overwrite: bool, client: Any,
         on_progress: ProgressCallback) -> RunResult:
    """The run, stage by stage: sources and tiles, the prior bank, stage 1, stage 2, the record, the file."""
    timings: dict[str, float] = {}
    on_progress("tiling", 0, 1)
    t0 = time.perf_counter()
    sources, skipped = scan_sources(inputs, config.bands, config.allow_no_crs, config.chips, config.strict)
    crs = output_crs(sources, config.out_crs)
    if crs is not None and any(s.crs is None for s in sources):
        raise InputError(f"{param('out_crs')} needs georeferenced rasters (the inputs have no CRS)")
    bank, bank_skipped = load_prior_bank(config.prior_bank, config.cache_dir) if config.prior_bank else (None, [])
    if config.match_bank_scale:
        assert bank is not None
        config = matched_to_bank(config, bank, sources)
    per_source = build_tiles(sources, config)
    timings["tiling"] = time.perf_counter() - t0
    on_progress("tiling", 1, 1)

    stage1 = run_stage1(sources, per_source, Stage1Options.from_config(config), bank, client, on_progress)
    timings.update(stage1.timings)
    tiles = _assemble(per_source, stage1.stats, stage1.decisions, crs)
    ground = add_ground_and_dates(tiles, sources, config.date_pattern)
    stage2 = None
    if stage1.budget.stage2:
        stage2 = run_stage2(tiles, sources, stage1.scalings, Stage2Options.from_config(config), stage1.budget, bank,
                            client, on_progress)
        tiles = stage2.tiles
        stage2.record.bank_skipped = bank_skipped
        timings.update(stage2.timings)

    record = make_record(sources, stage1.scalings, config, crs, timings, tiles)
    record.stage1, record.stage2, record.ground = stage1.record, stage2.record if stage2 else None, ground
    record.skipped = [{key: redact(str(value)) for key, value in item.items()} for item in skipped]
    record.warnings = _bank_warnings(bank_skipped) + stage1.warnings
    result = RunResult(tiles=tiles, record=record, timings=timings, clusters=stage2.clusters if stage2 else None,
                       evaluation=stage2.evaluation if stage2 else None)
    if output is not None:
        _write(result, output, sources, overwrite, on_progress)
    return result


def _bank_warnings(bank_skipped: list[dict]) -> list[str]:
    """The run record's warning about unreadable prior-bank images, if any."""
    if not bank_skipped:
        return []
    return [f"prior bank: {len(bank_skipped)} unreadable image(s) skipped, e.g. {bank_skipped[0]['path']}"]


def _write(result: RunResult, output: str | Path, sources: Sequence[RasterSource], overwrite: bool,
           on_progress: ProgressCallback) -> None:
    """Write the run's GeoPackage: tiles (source URLs without their credentials), record, clusters
    and evaluation."""
    t0 = time.perf_counter()
    on_progress("writing", 0, 1)
    extra: dict[str, pd.DataFrame] = {"clusters": result.clusters} if result.clusters is not None else {}
    if result.evaluation is not None:
        extra["evaluation"] = result.evaluation.reset_index()
    tiles = result.tiles
    if any(has_credentials(s.path) for s in sources):  # credentials in input URLs are never written
        tiles = tiles.assign(source=tiles["source"].map(redact))
    result.output = write_geopackage(output, tiles, result.record.to_table(), extra, overwrite=overwrite)
    result.timings["write"] = time.perf_counter() - t0
    result.record.timings = dict(result.timings)
    on_progress("writing", 1, 1)


def _assemble(per_source: list[gpd.GeoDataFrame], stats: pd.DataFrame, decisions: pd.DataFrame,
              crs: CRS | None) -> gpd.GeoDataFrame:
    frames = []
    for frame in per_source:
        if crs is not None and frame.crs != crs:
            frame = frame.to_crs(crs)
        else:
            frame = frame.set_crs(crs, allow_override=True) if crs is not None else frame
        frames.append(frame)
    tiles = pd.concat(frames, ignore_index=True)
    tiles = gpd.GeoDataFrame(tiles, geometry="geometry", crs=crs)
    stat_cols = [c for c in stats.columns if c != "tile_id"]
    body = pd.concat([stats[stat_cols].reset_index(drop=True), decisions.reset_index(drop=True)], axis=1)
    geometry = tiles.geometry
    tiles = pd.concat([tiles.drop(columns="geometry"), body], axis=1)
    return gpd.GeoDataFrame(tiles, geometry=geometry.values, crs=crs)


def add_ground_and_dates(tiles: gpd.GeoDataFrame, sources: Sequence[RasterSource],
                         date_pattern: str | None = None) -> GroundRecord:
    """Give ``tiles`` (in place) their ``ground_cell`` (a cell of one grid common to every
    raster, :func:`~rsprune_geo.reading.tiling.ground_cells`) and ``date`` (their raster's acquisition
    date, :func:`~rsprune_geo.reading.sources.acquisition_date`; NaT when unknown). Returns the record
    of both: the grid's cell size and origin, each input's date and where it was read."""
    cells, size, origin = ground_cells(tiles.geometry)
    tiles["ground_cell"] = cells
    found = {s.path: acquisition_date(s.path, date_pattern, s.date_tags) for s in sources}
    tiles["date"] = pd.to_datetime(tiles["source"].map({p: d for p, (d, _) in found.items()}))
    dated = sum(1 for d, _ in found.values() if not np.isnat(d))
    if date_pattern and dated < len(found):
        log.warning("%d of %d raster(s) have no date (%s matched no file name, and no metadata says it)",
                    len(found) - dated, len(found), param("date_pattern"))
    return GroundRecord(
        cell_size=None if np.isnan(size) else size,
        origin=None if np.isnan(origin[0]) else list(origin),
        cells=int(pd.Series(cells).replace("", np.nan).nunique()),
        dates={redact(p): [None if np.isnat(d) else str(d)[:19], how or None] for p, (d, how) in found.items()},
    )


def make_record(sources: Sequence[RasterSource], scalings: Sequence[Scaling], config: RunConfig, crs: CRS | None,
                timings: dict[str, float], tiles: pd.DataFrame) -> RunRecord:
    """The :class:`RunRecord` of a run: parameters, versions, inputs with their stretch, counts."""
    from dataclasses import asdict

    run_id, created = RunRecord.now()
    return RunRecord(
        run_id=run_id,
        created=created,
        parameters={k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(config).items()},
        versions=package_versions(),
        crs=crs.to_string() if crs is not None else None,
        inputs=[
            {
                "path": redact(s.path),
                "fingerprint": s.fingerprint,
                "key": s.key,
                "crs": s.crs.to_string() if s.crs is not None else None,
                "width": s.width,
                "height": s.height,
                "dtype": s.dtype,
                "bands": list(s.bands),
                "mask": s.mask_mode,
                "scaling": None if sc.identity else {"low": list(sc.low or ()), "high": list(sc.high or ())},
            }
            for s, sc in zip(sources, scalings)
        ],
        counts=status_counts(tiles["status"]),
        timings=dict(timings),
        seed=config.seed,
    )
