"""Stage 1 as one step of a run.

Score every tile, judge its information against the prior bank's floor (or the paper's global cut),
and record why each tile goes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from ..bank.profile import Bank, BankProfile
from ..choices import ScalingScope, Stage1Rule
from ..config import RunConfig
from ..engine.columns import TileColumns
from ..engine.passes import Encoding, run_pass
from ..engine.plan import RunPlan
from ..engine.window import Encode, PassSpec
from ..errors import InputError, counted, param
from ..features.cache import atomic_save_npz, default_cache_dir, load_npz
from ..progress import ProgressCallback, no_progress
from ..reading.pixels import IDENTITY, Scaling, run_scaling, source_scaling
from ..reading.remote import redact
from ..reading.scan import distinct
from ..reading.sources import RasterSource
from ..runs.record import Stage1Record
from ..runs.vocabulary import Status
from .budget import Budget
from .information import EntropyFloor, bank_entropies, entropy_cut, plausibility_floor

log = logging.getLogger(__name__)

#: The smallest tile (pixels) worth matching to a prior-bank image's ground: coarser rasters
#: need a bank at their own pixel size instead.
MIN_MATCHED_TILE = 32


@dataclass(frozen=True)
class Stage1Options:
    """What stage 1 needs of a run's parameters (see :class:`~rsprune_geo.config.RunConfig`).

    Its rule and thresholds, how values become grey levels, how the work is split, and the run's
    :class:`~rsprune_geo.stages.budget.Budget` (planned: stage 1 counts the tiles).
    """

    rule: Stage1Rule
    budget: Budget
    max_nodata: float
    entropy_min: float | None
    plausibility_z: float
    scaling: ScalingScope
    percentiles: tuple[float, float]
    group_px: int
    chips: bool
    match_bank_scale: bool
    cache_dir: str | None
    strict: bool = False

    @classmethod
    def from_config(cls, config: RunConfig) -> Stage1Options:
        """Stage 1's options of a (validated) run configuration."""
        return cls(
            rule=config.stage1_rule, budget=Budget.of(config), max_nodata=config.max_nodata,
            entropy_min=config.entropy_min, plausibility_z=config.plausibility_z, scaling=config.scaling,
            percentiles=config.percentiles, group_px=config.group_px,
            chips=config.chips, match_bank_scale=config.match_bank_scale, cache_dir=config.cache_dir,
            strict=config.strict,
        )


@dataclass
class Stage1Result:
    """What stage 1 gives a run.

    Its decisions are in the run's :class:`~rsprune_geo.engine.columns.TileColumns`; here are each
    source's grey-level ``scalings``, the counted ``budget``, the bank's ``floor`` (bank rule), the
    global cut's entropy and count (paper rule, for the reasons), the ``stage1`` record and any
    warnings.
    """

    scalings: Sequence[Scaling]
    budget: Budget
    floor: EntropyFloor | None
    cut: tuple[float | None, int | None]
    record: Stage1Record
    warnings: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)


def unreadable_warning(errors: Sequence[tuple[str, str]]) -> str:
    """The run's warning about windows whose pixels could not be read (their tiles are ``nodata``).

    ``errors`` as ``(path, message)``, the message naming its file.
    """
    files = len({path for path, _ in errors})
    return (f"{counted(len(errors), 'window')} of {counted(files, 'file')} could not be read, their tiles recorded "
            "as nodata "
            f"({param('strict')} stops the run instead), e.g. {redact(errors[0][1])}")


def tiles_pixel_size(sources: Sequence[RasterSource]) -> float | None:
    """The median ground sample distance (m) of the sources, ``None`` when none has a CRS."""
    if all(crs is None for crs in distinct(sources, "crs")):
        return None
    sizes = np.fromiter((np.nan if (gsd := s.pixel_size_m) is None else gsd for s in sources), dtype=np.float64,
                        count=len(sources))
    sizes = sizes[~np.isnan(sizes)]
    return float(np.median(sizes)) if sizes.size else None


def bank_tile_size(bank: Bank, sources: Sequence[RasterSource]) -> int | None:
    """The tile size (pixels) whose ground matches one prior-bank image's.

    ``None`` when the bank or the rasters declare no ground sample distance.
    """
    tile_gsd = tiles_pixel_size(sources)
    if bank.gsd is None or tile_gsd is None:
        return None
    return max(8, round(bank.image_side * bank.gsd / tile_gsd))


def matched_to_bank(config: RunConfig, bank: Bank, sources: Sequence[RasterSource]) -> RunConfig:
    """``config`` with the tile size that covers one prior-bank image's ground (``match_bank_scale``).

    An :class:`InputError` when it cannot be matched.
    """
    size = bank_tile_size(bank, sources)
    if size is None:
        raise InputError(f"{param('match_bank_scale')} needs georeferenced rasters and a prior bank that "
                         "declares its ground sample distance (bank.json with {\"gsd\": METRES})")
    if size < MIN_MATCHED_TILE:
        raise InputError(f"{param('match_bank_scale')}: a prior-bank image's ground is {counted(size, 'pixel')} of "
                         "these rasters; use a prior bank at their pixel size instead")
    log.info("tile size %d px: one tile covers the ground of one prior-bank image", size)
    return replace(config, tile_size=size, stride=None)


def scale_warnings(bank: Bank, sources: Sequence[RasterSource], options: Stage1Options) -> list[str]:
    """Warn when the tiles' ground size is far from the prior bank's.

    Warn (log, and return the lines for the run record) when the tiles' ground size is far from the
    prior bank's: its scenes are then seen at another scale.
    """
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


def bank_floor(bank: Bank, sources: Sequence[RasterSource], options: Stage1Options) -> EntropyFloor:
    """The stage-1 entropy floor of the prior bank.

    Its images brought to the tiles' pixel size (downsampled when the tiles are coarser); cached by bank
    fingerprint and scale.
    """
    tile_gsd = None if options.chips else tiles_pixel_size(sources)
    scale = 1.0 if bank.gsd is None or tile_gsd is None else min(1.0, bank.gsd / tile_gsd)
    if isinstance(bank, BankProfile):
        return plausibility_floor(bank.entropies(scale), bank.labels, options.plausibility_z)
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


class Repeated(Sequence[Scaling]):
    """One value ``count`` times, held once."""

    def __init__(self, value: Scaling, count: int) -> None:
        self.value, self.size = value, count

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self.value] * len(range(*index.indices(self.size)))
        if not -self.size <= index < self.size:
            raise IndexError(index)
        return self.value


def stage1_scalings(sources: Sequence[RasterSource], options: Stage1Options) -> Sequence[Scaling]:
    """How each source's values become grey levels.

    Per source, or one stretch for the run (sources with nothing to stretch, a folder of uint8 chips:
    one value for all, not a list).
    """
    if options.scaling is ScalingScope.RUN:
        return run_scaling(sources, options.percentiles)
    if distinct(sources, "dtype") == ["uint8"]:  # nothing to stretch (a folder of chips, as a rule)
        return Repeated(IDENTITY, len(sources))
    return [_stretch(s, options) for s in sources]


def _stretch(source: RasterSource, options: Stage1Options) -> Scaling:
    """A source's own stretch (:func:`~rsprune_geo.reading.pixels.source_scaling`).

    A source planned from its STAC item that cannot be read gets a placeholder (0 to 1): its windows
    fail too, and the run says why (``strict`` stops it here).
    """
    try:
        return source_scaling(source, options.percentiles)
    except InputError:
        if options.strict or not source.planned:
            raise
        bands = len(source.bands)
        return IDENTITY if source.dtype == "uint8" else Scaling((0.0,) * bands, (1.0,) * bands)


def run_stage1(plan: RunPlan, options: Stage1Options, columns: TileColumns, bank: Bank | None = None,
               encoding: Encoding | None = None, on_progress: ProgressCallback = no_progress) -> Stage1Result:
    """Stage 1 over the run's windows, each read once (on local threads or the plan's Dask client).

    Every tile scored and judged against what is known before reading (``nodata`` over the nodata limit,
    ``low_information`` under the absolute threshold or the bank's floor), its row written to the tile
    table; with ``encoding`` (the bank rule's single pass) the tiles that pass are encoded and assigned
    in the same task. Then the tiles with data are counted and, by the paper's rule, the global
    top-fraction cut taken. An :class:`InputError` when none passes.
    """
    timings: dict[str, float] = {}
    sources = plan.sources
    scalings = stage1_scalings(sources, options)
    floor, warnings = None, []
    if options.rule is Stage1Rule.BANK:
        assert bank is not None, "the bank rule judges against a prior bank"
        warnings = scale_warnings(bank, sources, options)
        floor = bank_floor(bank, sources, options)
    encoder = encoding.encoder if encoding is not None else None
    spec = PassSpec(plan.parts, plan.crs, plan.ground, options.max_nodata, options.entropy_min,
                    floor.bits if floor is not None else None,
                    encode=encoding.what if encoding is not None else Encode.NONE,
                    input_size=encoder.input_size if encoder is not None else 224,
                    encoder_key=encoder.cache_key if encoder is not None else "", cache_root=options.cache_dir,
                    vectors=encoding is not None and encoding.on_vectors is not None, redact=plan.redact,
                    strict=options.strict)
    t0 = time.perf_counter()
    unreadable = run_pass(plan.grid, scalings, spec, columns, encoder,
                          encoding.centroids if encoding is not None else None, plan.client, on_progress,
                          on_vectors=encoding.on_vectors if encoding is not None else None, scheduler=plan.scheduler)
    timings["windows"] = time.perf_counter() - t0
    if unreadable:
        warnings.append(unreadable_warning(unreadable))
        log.warning(warnings[-1])
    t0 = time.perf_counter()
    budget = options.budget.counted(columns.tiles_with_data())
    warnings += budget.notes()
    for note in budget.notes():
        log.warning(note)
    cut = entropy_cut(columns, budget.stage1_cut, plan.grid.order_keys)
    timings["stage1_filter"] = time.perf_counter() - t0
    log.info("stage 1 (rule %s%s): %s", options.rule, f", floor {floor.bits:.2f} bits" if floor is not None else "",
             ", ".join(f"{n} {status}" for status, n in columns.counts().items()))
    check_passed(columns, budget)
    record = Stage1Record(
        rule=options.rule, tiles_with_data=budget.tiles_with_data, stage1_count=budget.stage1_kept,
        floor_bits=floor.bits if floor is not None else None,
        floor_per_scene=floor.per_scene if floor is not None else None,
        plausibility_z=floor.z if floor is not None else None,
    )
    return Stage1Result(scalings, budget, floor, cut, record, warnings, timings)


def check_passed(columns: TileColumns, budget: Budget) -> None:
    """An :class:`InputError` saying why, when no tile passed stage 1."""
    if columns.where(Status.KEPT).size:
        return
    counts = ", ".join(f"{n} {s}" for s, n in columns.counts().items())
    raise InputError(f"no tile passed stage 1 ({counts}); check the bands, the nodata limit and the entropy threshold")
