"""Stage 1 as one step of a run: score every tile, judge its information against the prior
bank's floor (or the paper's global cut), and record why each tile goes."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd

from ..config import RunConfig, ScalingScope, Scheduler, Stage1Rule
from ..errors import InputError, param
from ..features.cache import atomic_save_npz, default_cache_dir, load_npz
from ..progress import ProgressCallback, no_progress
from ..reading.pixels import Scaling, run_scaling, source_scaling
from ..reading.sources import RasterSource
from ..schema import Stage1Record, Status, status_counts
from .budget import Budget, tiles_with_data
from .information import EntropyFloor, apply_information_filter, bank_entropies, plausibility_floor, score_tiles
from .priorbank import PriorBank

log = logging.getLogger(__name__)

#: The smallest tile (pixels) worth matching to a prior-bank image's ground: coarser rasters
#: need a bank at their own pixel size instead.
MIN_MATCHED_TILE = 32


@dataclass(frozen=True)
class Stage1Options:
    """What stage 1 needs of a run's parameters (see :class:`~rsprune_geo.config.RunConfig`):
    its rule and thresholds, how values become grey levels, how the work is split, and the
    run's :class:`~rsprune_geo.stages.budget.Budget` (planned: stage 1 counts the tiles)."""

    rule: Stage1Rule
    budget: Budget
    max_nodata: float
    entropy_min: float | None
    plausibility_z: float
    scaling: ScalingScope
    percentiles: tuple[float, float]
    group_px: int
    scheduler: Scheduler
    chips: bool
    match_bank_scale: bool
    cache_dir: str | None

    @classmethod
    def from_config(cls, config: RunConfig) -> Stage1Options:
        """Stage 1's options of a (validated) run configuration."""
        return cls(
            rule=config.stage1_rule, budget=Budget.of(config), max_nodata=config.max_nodata,
            entropy_min=config.entropy_min, plausibility_z=config.plausibility_z, scaling=config.scaling,
            percentiles=config.percentiles, group_px=config.group_px, scheduler=config.scheduler,
            chips=config.chips, match_bank_scale=config.match_bank_scale, cache_dir=config.cache_dir,
        )


@dataclass
class Stage1Result:
    """What stage 1 gives a run: per tile its ``stats`` (entropy, nodata fraction, band
    statistics) and ``decisions`` (``status``, ``reason``, ``entropy_rank``), in the order of the
    tiles; each source's grey-level ``scalings``; the counted ``budget``; the bank's ``floor``
    (bank rule); the ``stage1`` record and any warnings."""

    stats: pd.DataFrame
    decisions: pd.DataFrame
    scalings: list[Scaling]
    budget: Budget
    floor: EntropyFloor | None
    record: Stage1Record
    warnings: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)


def tiles_pixel_size(sources: Sequence[RasterSource]) -> float | None:
    """The median ground sample distance (m) of the sources, ``None`` when none has a CRS."""
    sizes = [s.pixel_size_m for s in sources if s.pixel_size_m is not None]
    return float(np.median(sizes)) if sizes else None


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


def matched_to_bank(config: RunConfig, bank: PriorBank, sources: Sequence[RasterSource]) -> RunConfig:
    """``config`` with the tile size that covers one prior-bank image's ground
    (``match_bank_scale``); an :class:`InputError` when it cannot be matched."""
    size = bank_tile_size(bank, sources)
    if size is None:
        raise InputError(f"{param('match_bank_scale')} needs georeferenced rasters and a prior bank that "
                         "declares its ground sample distance (bank.json with {\"gsd\": METRES})")
    if size < MIN_MATCHED_TILE:
        raise InputError(f"{param('match_bank_scale')}: a prior-bank image's ground is {size} pixel(s) of "
                         "these rasters; use a prior bank at their pixel size instead")
    log.info("tile size %d px: one tile covers the ground of one prior-bank image", size)
    return replace(config, tile_size=size, stride=None)


def scale_warnings(bank: PriorBank, sources: Sequence[RasterSource], options: Stage1Options) -> list[str]:
    """Warn (log, and return the lines for the run record) when the tiles' ground size is far
    from the prior bank's: its scenes are then seen at another scale."""
    tile_gsd = tiles_pixel_size(sources)
    if bank.gsd is None or tile_gsd is None or options.chips:
        return []
    ratio = tile_gsd / bank.gsd
    if 1 / 3 <= ratio <= 3 or options.match_bank_scale:
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


def bank_floor(bank: PriorBank, sources: Sequence[RasterSource], options: Stage1Options) -> EntropyFloor:
    """The stage-1 entropy floor of the prior bank, its images brought to the tiles' pixel size
    (downsampled when the tiles are coarser); cached by bank fingerprint and scale."""
    tile_gsd = None if options.chips else tiles_pixel_size(sources)
    scale = 1.0 if bank.gsd is None or tile_gsd is None else min(1.0, bank.gsd / tile_gsd)
    cache_root = Path(options.cache_dir) if options.cache_dir else default_cache_dir()
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
    return plausibility_floor(entropies, bank.labels, options.plausibility_z)


def stage1_scalings(sources: Sequence[RasterSource], options: Stage1Options) -> list[Scaling]:
    """How each source's values become grey levels: per source, or one stretch for the run."""
    if options.scaling is ScalingScope.RUN:
        return run_scaling(sources, options.percentiles)
    return [source_scaling(s, options.percentiles) for s in sources]


def run_stage1(
    sources: Sequence[RasterSource],
    tiles: Sequence[gpd.GeoDataFrame],
    options: Stage1Options,
    bank: PriorBank | None = None,
    client: Any | None = None,
    on_progress: ProgressCallback = no_progress,
) -> Stage1Result:
    """Stage 1 on the ``tiles`` of each source: score them (one read per window of tiles, on
    local threads or a Dask ``client``), count the tiles with data, and decide: ``nodata`` over
    the nodata limit, ``low_information`` under the absolute threshold, the bank's floor (bank
    rule) or the global top-fraction cut (paper rule). An :class:`InputError` when no tile passes.
    """
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    scalings = stage1_scalings(sources, options)
    on_progress("stage1", 0, 1)
    stats = score_tiles(sources, tiles, scalings, options.group_px, options.scheduler, on_progress, client)
    timings["stage1_scoring"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    floor, warnings = None, []
    if options.rule is Stage1Rule.BANK:
        assert bank is not None, "the bank rule judges against a prior bank"
        warnings = scale_warnings(bank, sources, options)
        floor = bank_floor(bank, sources, options)
    nodata = stats["nodata_fraction"].to_numpy() > options.max_nodata
    budget = options.budget.counted(tiles_with_data(np.where(nodata, Status.NODATA, Status.KEPT)))
    decisions = apply_information_filter(stats, options.max_nodata, options.entropy_min, budget.stage1_cut, floor)
    timings["stage1_filter"] = time.perf_counter() - t0
    log.info("stage 1 (rule %s%s): %s", options.rule, f", floor {floor.bits:.2f} bits" if floor is not None else "",
             ", ".join(f"{n} {status}" for status, n in status_counts(decisions["status"]).items()))
    check_passed(decisions["status"].to_numpy(), budget)
    record = Stage1Record(
        rule=options.rule.value, tiles_with_data=budget.tiles_with_data,
        stage1_count=budget.stage1_kept,
        floor_bits=floor.bits if floor is not None else None,
        floor_per_scene=floor.per_scene if floor is not None else None,
        plausibility_z=floor.z if floor is not None else None,
    )
    return Stage1Result(stats, decisions, list(scalings), budget, floor, record, warnings, timings)


def check_passed(statuses: np.ndarray, budget: Budget) -> None:
    """An :class:`InputError` saying why, when no tile passed stage 1."""
    if (statuses == Status.KEPT).any():
        return
    if budget.tiles_with_data and budget.stage1_kept == 0:
        raise InputError(f"keeping {budget.stage1_share} of {budget.tiles_with_data} tile(s) with data rounds to none; "
                         "raise the keep fraction")
    counts = ", ".join(f"{n} {s}" for s, n in status_counts(statuses).items())
    raise InputError(f"no tile passed stage 1 ({counts}); check the bands, the nodata limit and the entropy threshold")
