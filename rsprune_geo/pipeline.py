"""The whole run: sources → tiling → stage 1 → (stage 2) → GeoPackage, behind one call."""

from __future__ import annotations

import datetime as _dt
import json
import logging
import platform
import time
from dataclasses import asdict, dataclass, field, replace
from importlib import metadata
from pathlib import Path
from typing import Sequence

import geopandas as gpd
import numpy as np
import pandas as pd
from rasterio.crs import CRS

from .errors import InputError
from .features import DEFAULT_ENCODER
from .information import (
    DEFAULT_PLAUSIBILITY_Z,
    PAPER_STAGE1_KEEP,
    STAGE1_RULES,
    STATUS_KEPT,
    STATUS_NODATA,
    apply_information_filter,
    run_scaling,
    score_tiles,
    source_scaling,
)
from .selection import QUOTA_MODES
from .outputs import check_output_path, write_geopackage
from .sources import RasterSource, parse_bands, scan_sources
from .tiling import EDGE_MODES, clip_to_aoi, make_tiles, read_aoi, whole_tile

log = logging.getLogger(__name__)

#: The smallest tile (pixels) worth matching to a prior-bank image's ground: coarser rasters
#: need a bank at their own pixel size instead.
MIN_MATCHED_TILE = 32

#: How non-uint8 values are scaled to grey levels: per source, or one scaling for the run.
SCALING_SCOPES = ("source", "run")
#: Stage-2 clustering: assign tiles to the prior bank's centroids, or k-means on the tiles.
CLUSTERING_MODES = ("prior", "self")


@dataclass
class RunConfig:
    """Parameters of a run. Fields map to the ``rsprune run`` options of the same name
    (``_`` → ``-``), except ``percentiles``, ``group_px`` and ``scheduler`` (API only).

    ``keep`` and ``stage1_keep`` are fractions of the tiles that have data (tiles not dropped
    as ``nodata``); ``stage1_keep`` defaults to 1.0 under the ``bank`` rule (no cut beyond the
    floor: measured best) and 0.30 under ``paper``; ``keep`` defaults to stage 1's fraction.
    ``stage1`` is the stage-1 rule: ``bank`` (the default with a prior bank) drops tiles whose
    entropy no scene of the bank reaches, then takes the ``stage1_keep`` cut within each tile's
    nearest scene (so stage 2's encoding always runs); ``paper`` (the default without one)
    keeps the global top ``stage1_keep`` by entropy, the paper's D_H↑30%. Stage 2 selects
    ``keep`` among stage 1's candidates when a prior bank is given and ``keep`` is below stage
    1's fraction. ``scaling`` says whether non-uint8 rasters are stretched to
    grey levels per source (default) or once for the whole run (one scene cut into files).
    """

    tile_size: int = 256
    stride: int | None = None
    edge: str = "drop"
    bands: tuple[int, ...] | None = None
    aoi: str | None = None
    max_nodata: float = 0.25
    entropy_min: float | None = None
    stage1: str | None = None
    plausibility_z: float = DEFAULT_PLAUSIBILITY_Z
    stage1_keep: float | None = None
    keep: float | None = None
    out_crs: str | None = None
    seed: int = 0
    allow_no_crs: bool = False
    scaling: str = "source"
    percentiles: tuple[float, float] = (2.0, 98.0)
    group_px: int = 2048
    scheduler: str | None = "threads"
    chips: bool = False
    strict: bool = False
    # stage 2
    prior_bank: tuple[str, ...] = ()
    encoder: str = DEFAULT_ENCODER
    weights: str | None = None
    k_per_class: int | None = 4
    images_per_centroid: int = 10
    k: int | None = None
    bank_samples: int | None = None
    match_bank_scale: bool = False
    clustering: str = "prior"
    quota_by: str = "scene"
    uniformity: float = 1.0
    spread: int = 1
    dedup: float | None = None
    cache_dir: str | None = None
    device: str | None = None
    batch_size: int | None = None
    evaluate: bool = False
    labels: str | None = None
    label_column: str = "label"
    eval_encoder: str | None = None
    # scale-out
    dask_address: str | None = None
    workers: int | None = None

    def validate(self) -> None:
        """Raise :class:`InputError` for a parameter out of range."""
        if self.tile_size < 8:
            raise InputError(f"--tile-size {self.tile_size}: use at least 8 pixels")
        if self.stride is not None and self.stride < 1:
            raise InputError(f"--stride {self.stride}: must be a positive number of pixels")
        if self.edge not in EDGE_MODES:
            raise InputError(f"--edge {self.edge}: use one of {', '.join(EDGE_MODES)}")
        if self.images_per_centroid < 1:
            raise InputError(f"--images-per-centroid {self.images_per_centroid}: must be at least 1")
        for name in ("stage1_keep", "keep"):
            value = getattr(self, name)
            if value is not None and not 0 < value <= 1:
                raise InputError(f"--{name.replace('_', '-')} {value}: must be in (0, 1]")
        if not 0 <= self.max_nodata <= 1:
            raise InputError(f"--max-nodata {self.max_nodata}: must be in [0, 1]")
        if self.entropy_min is not None and not 0 <= self.entropy_min <= 8:
            raise InputError(f"--entropy-min {self.entropy_min}: must be in [0, 8] bits")
        if self.scaling not in SCALING_SCOPES:
            raise InputError(f"--scaling {self.scaling}: use one of {', '.join(SCALING_SCOPES)}")
        lo, hi = self.percentiles
        if not 0 <= lo < hi <= 100:
            raise InputError(f"percentiles {self.percentiles}: need 0 <= low < high <= 100")
        if self.bands is not None:
            self.bands = parse_bands(self.bands)
        if self.out_crs is not None:
            resolve_crs(self.out_crs)
        if isinstance(self.prior_bank, (str, Path)):
            self.prior_bank = (str(self.prior_bank),)
        self.prior_bank = tuple(str(p) for p in self.prior_bank)
        if self.stage1 is not None and self.stage1 not in STAGE1_RULES:
            raise InputError(f"--stage1 {self.stage1}: use one of {', '.join(STAGE1_RULES)}")
        if self.stage1 == "bank" and not self.prior_bank:
            raise InputError("--stage1 bank judges information against a prior bank: give --prior-bank")
        if not 0 <= self.plausibility_z <= 20:
            raise InputError(f"--plausibility-z {self.plausibility_z}: must be in [0, 20]")
        if self.bank_samples is not None and self.bank_samples < 1:
            raise InputError(f"--bank-samples {self.bank_samples}: must be at least 1")
        if self.quota_by not in QUOTA_MODES:
            raise InputError(f"--quota-by {self.quota_by}: use one of {', '.join(QUOTA_MODES)}")
        if self.match_bank_scale and not self.prior_bank:
            raise InputError("--match-bank-scale needs --prior-bank")
        if self.clustering not in CLUSTERING_MODES:
            raise InputError(f"--clustering {self.clustering}: use one of {', '.join(CLUSTERING_MODES)}")
        if not 0 <= self.uniformity <= 1:
            raise InputError(f"--uniformity {self.uniformity}: must be in [0, 1]")
        if self.k is not None and self.k < 1:
            raise InputError(f"--k {self.k}: must be at least 1")
        if self.k_per_class is not None and self.k_per_class < 1:
            raise InputError(f"--k-per-class {self.k_per_class}: must be at least 1")
        if self.dedup is not None and not 0 < self.dedup <= 1:
            raise InputError(f"--dedup {self.dedup}: the cosine threshold must be in (0, 1]")
        if self.batch_size is not None and self.batch_size < 1:
            raise InputError(f"--batch-size {self.batch_size}: must be at least 1")
        if self.spread < 1:
            raise InputError(f"--spread {self.spread}: must be at least 1")
        if self.evaluate and not self.prior_bank:
            raise InputError("--evaluate compares stage-2 selections: give --prior-bank")
        if self.labels is not None and not self.evaluate:
            raise InputError("--labels are used by --evaluate: give both")

    @property
    def stage1_rule(self) -> str:
        """The stage-1 rule in force: ``stage1``, else ``bank`` with a prior bank, else ``paper``."""
        return self.stage1 or ("bank" if self.prior_bank else "paper")

    @property
    def stage2(self) -> bool:
        """Whether stage 2 runs: a prior bank is given and either the keep ratio is below stage
        1's or stage 1's cut is taken within scenes (which needs every candidate's scene)."""
        if not self.prior_bank:
            return False
        return self.stage1_rule == "bank" or self.effective_keep < self.stage1_fraction

    @property
    def stage1_fraction(self) -> float:
        """Stage 1's keep fraction: ``stage1_keep``, else 1.0 (``bank``) or 0.30 (``paper``)."""
        if self.stage1_keep is not None:
            return self.stage1_keep
        return 1.0 if self.stage1_rule == "bank" else PAPER_STAGE1_KEEP

    @property
    def effective_keep(self) -> float:
        """The final keep fraction (``keep``, or stage 1's fraction when not given)."""
        return self.keep if self.keep is not None else self.stage1_fraction


@dataclass
class RunResult:
    """What a run produced: every tile with its decision, the run record and the output path."""

    tiles: gpd.GeoDataFrame
    record: dict
    output: Path | None = None
    timings: dict = field(default_factory=dict)
    clusters: pd.DataFrame | None = None
    evaluation: pd.DataFrame | None = None

    @property
    def kept(self) -> gpd.GeoDataFrame:
        """The kept tiles."""
        return self.tiles[self.tiles["status"] == STATUS_KEPT]

    def summary(self) -> str:
        """A one-screen text summary of the run."""
        counts = self.tiles["status"].value_counts()
        total = len(self.tiles)
        lines = [f"tiles: {total}  (sources: {len(self.record['inputs'])}, crs: {self.record['crs']})"]
        for item in self.record.get("skipped") or []:
            lines.append(f"skipped: {item['error']}")
        for status in ("kept", "not_selected", "duplicate", "low_information", "nodata"):
            if status in counts:
                n = int(counts[status])
                lines.append(f"  {status:<16} {n:>8}  {100 * n / total:5.1f}%")
        st1 = self.record.get("stage1") or {}
        if st1:
            floor = (f", entropy floor {st1['floor_bits']:.2f} bits (no prior-bank scene below it)"
                     if st1.get("floor_bits") is not None else "")
            lines.append(f"stage 1: rule {st1['rule']}{floor}; fractions count the {st1['tiles_with_data']} "
                         f"tile(s) with data")
        for warning in self.record.get("warnings") or []:
            lines.append(f"warning: {warning}")
        if self.timings:
            lines.append("timings: " + ", ".join(f"{k} {v:.2f}s" for k, v in self.timings.items()))
        if self.record.get("stage2"):
            st2 = self.record["stage2"]
            lines.append(
                f"stage 2: encoder {st2['encoder']}, {st2['n_centroids']} centroids over "
                f"{st2['n_classes']} scenes, {st2['clustering']} clustering, quotas by "
                f"{st2.get('quota_by', 'centroid')}, budget {st2['budget']}"
            )
        if self.evaluation is not None:
            where = self.evaluation.attrs.get("independent_encoder")
            lines.append("evaluation (higher is better, except frechet and junk_kept"
                         + (f"; coverage and frechet in {where}'s space" if where else "") + "):")
            lines.append(self.evaluation.to_string(float_format=lambda v: f"{v:.3f}"))
        if self.output:
            lines.append(f"output: {self.output}")
        return "\n".join(lines)


def resolve_crs(text: str) -> CRS:
    """A CRS from user text (``EPSG:4326``, WKT, PROJ string)."""
    try:
        return CRS.from_user_input(text)
    except Exception:
        raise InputError(f"--out-crs {text!r}: not a CRS rasterio understands (e.g. EPSG:4326)") from None


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


def scale_warnings(bank, sources: Sequence[RasterSource], config: RunConfig) -> list[str]:
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
        advice += f", or tiles covering a bank image's ground (--tile-size {match}, or --match-bank-scale)"
    message = (
        f"the tiles are {tile_gsd:.3g} m/pixel and the prior bank {bank.gsd:.3g} m/pixel: its scenes are "
        f"seen at another scale; {advice}"
    )
    log.warning(message)
    return [message]


def bank_tile_size(bank, sources: Sequence[RasterSource]) -> int | None:
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


def bank_floor(bank, sources: Sequence[RasterSource], config: RunConfig):
    """The stage-1 entropy floor of the prior bank, its images brought to the tiles' pixel size
    (downsampled when the tiles are coarser); cached by bank fingerprint and scale."""
    from .features.cache import atomic_save_npz, default_cache_dir, load_npz
    from .information import bank_entropies, plausibility_floor

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
        raise InputError("--aoi needs georeferenced rasters (the inputs have no CRS)")
    if config.chips:
        tiles = [whole_tile(s) for s in sources]
        return [clip_to_aoi(t, aoi) if aoi is not None else t for t in tiles]
    return [make_tiles(s, config.tile_size, config.stride, config.edge, aoi) for s in sources]


def run(
    inputs: Sequence[str] | str,
    output: str | Path | None = None,
    config: RunConfig | None = None,
    overwrite: bool = False,
    progress: bool = True,
    on_progress=None,
    **overrides,
) -> RunResult:
    """Run the pipeline on rasters and (when ``output`` is given) write the GeoPackage.

    ``inputs``: paths, globs or folders. Keyword ``overrides`` set :class:`RunConfig` fields,
    e.g. ``run("mosaic.tif", "out.gpkg", tile_size=512, keep=0.15)``. With ``dask_address`` or
    ``workers`` the per-tile work (reading, stage 1, encoding) runs on a Dask cluster; an
    active ``distributed.Client`` is used too when ``scheduler=None``. ``on_progress(stage,
    done, total)`` is called as the run moves (stages ``tiling``, ``stage1``, ``prior_bank``,
    ``encoding``, ``selection``, ``writing``), for GUIs and machine-readable progress.
    """
    config = config or RunConfig()
    for key in overrides:
        if not hasattr(config, key):
            raise InputError(f"unknown parameter {key!r}")
    config = replace(config, **overrides)
    config.validate()
    if output is not None:
        check_output_path(output, overwrite)
    inputs = [inputs] if isinstance(inputs, (str, Path)) else list(inputs)
    from .scaleout import dask_client

    with dask_client(config.dask_address, config.workers, announce=progress) as client:
        return _run(inputs, output, config, overwrite, progress, client, on_progress or _ignore)


def _ignore(stage: str, done: int, total: int) -> None:
    """The default progress sink."""


def _run(inputs, output, config: RunConfig, overwrite: bool, progress: bool, client, on_progress) -> RunResult:
    timings: dict[str, float] = {}
    on_progress("tiling", 0, 1)

    t0 = time.perf_counter()
    sources, skipped = scan_sources(inputs, config.bands, config.allow_no_crs, config.chips, config.strict)
    crs = output_crs(sources, config.out_crs)
    if crs is not None and any(s.crs is None for s in sources):
        raise InputError("--out-crs needs georeferenced rasters (the inputs have no CRS)")
    if config.match_bank_scale:
        from .priorbank import find_prior_bank

        size = bank_tile_size(find_prior_bank(config.prior_bank), sources)
        if size is None:
            raise InputError("--match-bank-scale needs georeferenced rasters and a prior bank that declares "
                             "its ground sample distance (bank.json with {\"gsd\": METRES})")
        if size < MIN_MATCHED_TILE:
            raise InputError(f"--match-bank-scale: a prior-bank image's ground is {size} pixel(s) of these rasters; "
                             "use a prior bank at their pixel size instead")
        log.info("tile size %d px: one tile covers the ground of one prior-bank image", size)
        config = replace(config, tile_size=size, stride=None)
    per_source = build_tiles(sources, config)
    n_tiles = sum(len(t) for t in per_source)
    if n_tiles == 0:
        raise InputError("no tile to process: the area of interest misses every raster")
    timings["tiling"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    if config.scaling == "run":
        scalings = run_scaling(sources, config.percentiles)
    else:
        scalings = [source_scaling(s, config.percentiles) for s in sources]
    on_progress("stage1", 0, 1)
    stats = score_tiles(
        sources, per_source, scalings, config.group_px, None if client else config.scheduler, progress,
        on_progress,
    )
    timings["stage1_scoring"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    n_data = int((stats["nodata_fraction"].to_numpy() <= config.max_nodata).sum())
    stage1_fraction = config.stage1_fraction if config.stage2 else config.effective_keep
    floor = bank = None
    warnings_: list[str] = []
    if config.stage1_rule == "bank":
        from .priorbank import find_prior_bank

        bank = find_prior_bank(config.prior_bank)
        warnings_ += scale_warnings(bank, sources, config)
        floor = bank_floor(bank, sources, config)
    keep_count = None if config.stage1_rule == "bank" else round(stage1_fraction * n_data)
    decisions = apply_information_filter(stats, config.max_nodata, config.entropy_min, keep_count, floor)
    tiles = _assemble(per_source, stats, decisions, crs)
    timings["stage1_filter"] = time.perf_counter() - t0
    if not (tiles["status"] == STATUS_KEPT).any():
        if n_data and round(stage1_fraction * n_data) == 0:
            raise InputError(f"keeping {stage1_fraction} of {n_data} tile(s) with data rounds to none; "
                             "raise the keep fraction")
        counts = ", ".join(f"{n} {s}" for s, n in tiles["status"].value_counts().items())
        raise InputError(
            f"no tile passed stage 1 ({counts}); check the bands, the nodata limit and the entropy threshold"
        )

    clusters = evaluation = None
    stage2_record = None
    if config.stage2:
        from .stage2 import run_stage2

        outcome = run_stage2(tiles, sources, scalings, config, round(config.effective_keep * n_data),
                             timings, progress, client, on_progress,
                             stage1_count=round(config.stage1_fraction * n_data), bank=bank)
        on_progress("selection", 1, 1)
        tiles, clusters, evaluation, stage2_record = outcome
    record = run_record(sources, scalings, config, crs, timings, tiles)
    record["stage1"] = {
        "rule": config.stage1_rule,
        "tiles_with_data": n_data,
        "stage1_count": round(stage1_fraction * n_data),
        "floor_bits": floor.bits if floor is not None else None,
        "floor_per_scene": floor.per_scene if floor is not None else None,
        "plausibility_z": floor.z if floor is not None else None,
    }
    record["stage2"] = stage2_record
    record["skipped"] = skipped
    record["warnings"] = warnings_
    result = RunResult(tiles=tiles, record=record, timings=timings, clusters=clusters,
                       evaluation=evaluation)
    if output is not None:
        t0 = time.perf_counter()
        on_progress("writing", 0, 1)
        extra = {"clusters": clusters} if clusters is not None else {}
        if evaluation is not None:
            extra["evaluation"] = evaluation.reset_index()
        result.output = write_geopackage(output, tiles, runs_table(record), extra, overwrite=overwrite)
        timings["write"] = time.perf_counter() - t0
        record["timings"] = dict(timings)
        on_progress("writing", 1, 1)
    return result


def _assemble(per_source, stats, decisions, crs) -> gpd.GeoDataFrame:
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


def run_record(sources, scalings, config: RunConfig, crs, timings, tiles) -> dict:
    """Everything needed to reproduce and audit a run, as a JSON-able dict."""
    counts = tiles["status"].value_counts().to_dict()
    return {
        "run_id": _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ"),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "parameters": {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(config).items()},
        "versions": package_versions(),
        "crs": crs.to_string() if crs is not None else None,
        "inputs": [
            {
                "path": s.path,
                "fingerprint": s.fingerprint,
                "key": s.key,
                "crs": s.crs.to_string() if s.crs is not None else None,
                "width": s.width,
                "height": s.height,
                "dtype": s.dtype,
                "bands": list(s.bands),
                "mask": s.mask_mode,
                "scaling": None if sc.identity else {"low": list(sc.low), "high": list(sc.high)},
            }
            for s, sc in zip(sources, scalings)
        ],
        "counts": {str(k): int(v) for k, v in counts.items()},
        "timings": dict(timings),
        "seed": config.seed,
    }


def runs_table(record: dict) -> pd.DataFrame:
    """The ``runs`` table row of a record: scalars as they are, structures as JSON text."""
    row = {
        key: (json.dumps(value, sort_keys=True) if isinstance(value, (dict, list)) else value)
        for key, value in record.items()
    }
    return pd.DataFrame([row])
