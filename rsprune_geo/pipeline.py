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

from .config import RunConfig, param
from .errors import InputError
from .outputs.geopackage import check_output_path, write_geopackage
from .progress import ProgressCallback, no_progress
from .reading.pixels import Scaling, has_credentials, redact, run_scaling, source_scaling
from .reading.sources import RasterSource, acquisition_date, resolve_crs, scan_sources
from .reading.tiling import clip_to_aoi, ground_cells, make_tiles, read_aoi, whole_tile
from .result import RunResult
from .schema import RunRecord, Status, status_counts
from .stages.information import EntropyFloor, apply_information_filter, score_tiles
from .stages.priorbank import PriorBank

log = logging.getLogger(__name__)

#: The smallest tile (pixels) worth matching to a prior-bank image's ground: coarser rasters
#: need a bank at their own pixel size instead.
MIN_MATCHED_TILE = 32

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


def tiles_pixel_size(sources: Sequence[RasterSource]) -> float | None:
    """The median ground sample distance (m) of the sources, ``None`` when none has a CRS."""
    sizes = [s.pixel_size_m for s in sources if s.pixel_size_m is not None]
    return float(np.median(sizes)) if sizes else None


def scale_warnings(bank: PriorBank, sources: Sequence[RasterSource], config: RunConfig) -> list[str]:
    """Warn (log, and return the lines for the run record) when the tiles' ground size is far
    from the prior bank's: its scenes are then seen at another scale."""
    tile_gsd = tiles_pixel_size(sources)
    if bank.gsd is None or tile_gsd is None or config.chips:
        return []
    ratio = tile_gsd / bank.gsd
    if 1 / 3 <= ratio <= 3 or config.match_bank_scale:
        return []
    match = bank_tile_size(bank, sources)
    advice = f"use a prior bank at about {tile_gsd:.3g} m/pixel"
    if match is not None and match >= MIN_MATCHED_TILE:
        advice += (f", or tiles covering a bank image's ground ({param('tile_size')} {match}, or "
                   f"{param('match_bank_scale')})")
    message = (
        f"the tiles are {tile_gsd:.3g} m/pixel and the prior bank {bank.gsd:.3g} m/pixel: its scenes are "
        f"seen at another scale; {advice}"
    )
    log.warning(message)
    return [message]


def bank_tile_size(bank: PriorBank, sources: Sequence[RasterSource]) -> int | None:
    """The tile size (pixels) whose ground matches one prior-bank image's, ``None`` when the
    bank or the rasters declare no ground sample distance."""
    from PIL import Image

    tile_gsd = tiles_pixel_size(sources)
    if bank.gsd is None or tile_gsd is None:
        return None
    try:
        with Image.open(bank.paths[0]) as img:
            side = min(img.size)
    except OSError:
        side = 256
    return max(8, round(side * bank.gsd / tile_gsd))


def bank_floor(bank: PriorBank, sources: Sequence[RasterSource], config: RunConfig) -> EntropyFloor:
    """The stage-1 entropy floor of the prior bank, its images brought to the tiles' pixel size
    (downsampled when the tiles are coarser); cached by bank fingerprint and scale."""
    from .features.cache import atomic_save_npz, default_cache_dir, load_npz
    from .stages.information import bank_entropies, plausibility_floor

    tile_gsd = None if config.chips else tiles_pixel_size(sources)
    scale = 1.0 if bank.gsd is None or tile_gsd is None else min(1.0, bank.gsd / tile_gsd)
    cache_root = Path(config.cache_dir) if config.cache_dir else default_cache_dir()
    path = cache_root / "bank-entropy" / f"{bank.fingerprint}-s{scale:.4g}.npz"
    cached = load_npz(path) if path.exists() else None
    if cached is not None and cached["entropy"].shape == (len(bank),):
        entropies = cached["entropy"]
    else:
        entropies = bank_entropies(bank.paths, scale)
        try:
            atomic_save_npz(path, entropy=entropies)
        except OSError:  # a read-only cache only costs the recomputation
            pass
    return plausibility_floor(entropies, bank.labels, config.plausibility_z)


def build_tiles(sources: Sequence[RasterSource], config: RunConfig) -> list[gpd.GeoDataFrame]:
    """Tile every source (each in its own CRS), restricted to the AOI when one is set."""
    aoi = read_aoi(config.aoi) if config.aoi else None
    if aoi is not None and any(s.crs is None for s in sources):
        raise InputError(f"{param('aoi')} needs georeferenced rasters (the inputs have no CRS)")
    if config.chips:
        tiles = [whole_tile(s) for s in sources]
        return [clip_to_aoi(t, aoi) if aoi is not None else t for t in tiles]
    return [make_tiles(s, config.tile_size, config.stride, config.edge, aoi) for s in sources]


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
    from .scaleout import dask_client

    with dask_client(config.dask_address, config.workers) as client:
        return _run(inputs, output, config, overwrite, client, on_progress or no_progress)


def _run(inputs: list[str], output: str | Path | None, config: RunConfig, overwrite: bool, client: Any,
         on_progress: ProgressCallback) -> RunResult:
    timings: dict[str, float] = {}
    on_progress("tiling", 0, 1)

    t0 = time.perf_counter()
    sources, skipped = scan_sources(inputs, config.bands, config.allow_no_crs, config.chips, config.strict)
    crs = output_crs(sources, config.out_crs)
    if crs is not None and any(s.crs is None for s in sources):
        raise InputError(f"{param('out_crs')} needs georeferenced rasters (the inputs have no CRS)")
    if config.match_bank_scale:
        from .stages.priorbank import find_prior_bank

        size = bank_tile_size(find_prior_bank(config.prior_bank), sources)
        if size is None:
            raise InputError(f"{param('match_bank_scale')} needs georeferenced rasters and a prior bank that "
                             "declares its ground sample distance (bank.json with {\"gsd\": METRES})")
        if size < MIN_MATCHED_TILE:
            raise InputError(f"{param('match_bank_scale')}: a prior-bank image's ground is {size} pixel(s) of "
                             "these rasters; use a prior bank at their pixel size instead")
        log.info("tile size %d px: one tile covers the ground of one prior-bank image", size)
        config = replace(config, tile_size=size, stride=None)
    per_source = build_tiles(sources, config)
    n_tiles = sum(len(t) for t in per_source)
    if n_tiles == 0:
        raise InputError("no tile to process: the area of interest misses every raster")
    timings["tiling"] = time.perf_counter() - t0
    log.info("tiling: %d tile(s) of %d px from %d source(s), edge %s", n_tiles, config.tile_size, len(sources),
             config.edge)
    on_progress("tiling", 1, 1)

    t0 = time.perf_counter()
    scalings: list[Scaling]
    if config.scaling == "run":
        scalings = run_scaling(sources, config.percentiles)
    else:
        scalings = [source_scaling(s, config.percentiles) for s in sources]
    on_progress("stage1", 0, 1)
    stats = score_tiles(sources, per_source, scalings, config.group_px, config.scheduler, on_progress, client)
    timings["stage1_scoring"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    n_data = int((stats["nodata_fraction"].to_numpy() <= config.max_nodata).sum())
    stage1_fraction = config.stage1_fraction if config.stage2 else config.effective_keep
    floor = bank = None
    warnings_: list[str] = []
    bank_skipped: list[dict] = []
    if config.prior_bank:
        from .stages.priorbank import load_prior_bank

        bank, bank_skipped = load_prior_bank(config.prior_bank, config.cache_dir)
        if bank_skipped:
            warnings_.append(f"prior bank: {len(bank_skipped)} unreadable image(s) skipped, e.g. "
                             f"{bank_skipped[0]['path']}")
    if config.stage1_rule == "bank":
        assert bank is not None
        warnings_ += scale_warnings(bank, sources, config)
        floor = bank_floor(bank, sources, config)
    keep_count = None if config.stage1_rule == "bank" else round(stage1_fraction * n_data)
    decisions = apply_information_filter(stats, config.max_nodata, config.entropy_min, keep_count, floor)
    tiles = _assemble(per_source, stats, decisions, crs)
    ground = add_ground_and_dates(tiles, sources, config.date_pattern)
    timings["stage1_filter"] = time.perf_counter() - t0
    log.info("stage 1 (rule %s%s): %s", config.stage1_rule,
             f", floor {floor.bits:.2f} bits" if floor is not None else "",
             ", ".join(f"{n} {status}" for status, n in status_counts(tiles["status"]).items()))
    if not (tiles["status"] == Status.KEPT).any():
        if n_data and round(stage1_fraction * n_data) == 0:
            raise InputError(f"keeping {stage1_fraction} of {n_data} tile(s) with data rounds to none; "
                             "raise the keep fraction")
        counts = ", ".join(f"{n} {s}" for s, n in status_counts(tiles["status"]).items())
        raise InputError(
            f"no tile passed stage 1 ({counts}); check the bands, the nodata limit and the entropy threshold"
        )

    clusters = evaluation = None
    stage2_record = None
    if config.stage2:
        from .stages.stage2 import Stage2Options, run_stage2

        outcome = run_stage2(tiles, sources, scalings, Stage2Options.from_config(config),
                             round(config.effective_keep * n_data), round(config.stage1_fraction * n_data), bank,
                             client, on_progress)
        tiles, clusters, evaluation, stage2_record = outcome.tiles, outcome.clusters, outcome.evaluation, \
            outcome.record
        stage2_record["bank_skipped"] = bank_skipped
        timings.update(outcome.timings)
    record = make_record(sources, scalings, config, crs, timings, tiles)
    record.stage1 = {
        "rule": config.stage1_rule,
        "tiles_with_data": n_data,
        "stage1_count": round(stage1_fraction * n_data),
        "floor_bits": floor.bits if floor is not None else None,
        "floor_per_scene": floor.per_scene if floor is not None else None,
        "plausibility_z": floor.z if floor is not None else None,
    }
    record.stage2 = stage2_record
    record.ground = ground
    record.skipped = [{key: redact(str(value)) for key, value in item.items()} for item in skipped]
    record.warnings = warnings_
    result = RunResult(tiles=tiles, record=record, timings=timings, clusters=clusters,
                       evaluation=evaluation)
    if output is not None:
        t0 = time.perf_counter()
        on_progress("writing", 0, 1)
        extra: dict[str, pd.DataFrame] = {"clusters": clusters} if clusters is not None else {}
        if evaluation is not None:
            extra["evaluation"] = evaluation.reset_index()
        secret = any(has_credentials(s.path) for s in sources)  # credentials in input URLs are never written
        stored = tiles.assign(source=tiles["source"].map(redact)) if secret else tiles
        result.output = write_geopackage(output, stored, record.to_table(), extra, overwrite=overwrite)
        timings["write"] = time.perf_counter() - t0
        record.timings = dict(timings)
        on_progress("writing", 1, 1)
    return result


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
                         date_pattern: str | None = None) -> dict[str, Any]:
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
    return {
        "cell_size": None if np.isnan(size) else size,
        "origin": None if np.isnan(origin[0]) else list(origin),
        "cells": int(pd.Series(cells).replace("", np.nan).nunique()),
        "dates": {redact(p): (None if np.isnat(d) else str(d)[:19], how or None) for p, (d, how) in found.items()},
    }


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
