"""A plan before a long run (``rsprune run --dry-run``).

The inputs scanned and the tiles planned as a run plans them, the bytes to decode and the tiles to
encode counted, the encoder timed on a few batches here, and the hours it comes to on this machine
and on N workers. No output is written and no pixel is read beyond one sample window (to time
decoding). STAC items whose metadata give their grid (``proj:shape``, ``proj:transform``, the CRS,
and the bands' data type) are planned from it, without opening their files.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from .bank.profile import open_bank
from .choices import Stage1Rule
from .config import RunConfig
from .engine.passes import run_batch_size
from .errors import InputError, SkippedInput, counted
from .reading.grid import RunGrid, SourceGrid
from .reading.scan import planned_source, scan_sources
from .reading.sources import RasterSource, open_source
from .reading.stac import looks_like_stac, stac_paths
from .stages.stage1 import matched_to_bank

#: Chips whose sizes are read to estimate a folder's bytes (the rest are taken alike).
CHIP_SAMPLE = 1000
#: Seconds a run spends beside reading and encoding, per second of both: overlapping them, scoring,
#: resizing and writing (``bench_real``: a whole run is 1.2–1.3x its read and encoder floors).
OVERHEAD = 1.25
#: A sample window's side (px) for timing decoding.
SAMPLE_PX = 1024


@dataclass
class RunEstimate:
    """What a run will do, counted before it does it, and how long it should take.

    Attributes:
        inputs: the inputs scanned (files, chips).
        skipped: inputs that cannot be used (a run skips them, or stops with ``strict``).
        tiles: tiles in the grid.
        tasks: window tasks (each reads its windows once).
        bytes_to_decode: bytes the tasks' windows decode (every pixel of a window once).
        tiles_to_encode: tiles the encoder sees; under the bank rule an upper bound (the floor and
            the nodata limit drop some first, see ``encode_bound``).
        encoder: the encoder's cache key, ``None`` without stage 2.
        images_per_s: the encoder's speed measured here on a few batches.
        decode_mb_per_s: decoding speed measured here on one sample window.
        setup_s: what preparing the prior bank and the encoder took here.
        encode_bound: whether ``tiles_to_encode`` is an upper bound (the bank rule) rather than
            a count (the paper's rule encodes exactly its stage-1 share).
        from_metadata: STAC items planned from their metadata, without opening their files.

    """

    inputs: int
    skipped: int
    tiles: int
    tasks: int
    bytes_to_decode: int
    tiles_to_encode: int
    encoder: str | None
    images_per_s: float | None
    decode_mb_per_s: float
    setup_s: float
    encode_bound: bool = True
    from_metadata: int = 0

    @property
    def seconds(self) -> float:
        """The estimated run on this machine: decoding and encoding, with the run's overhead."""
        decode = self.bytes_to_decode / 1e6 / max(self.decode_mb_per_s, 1e-9)
        encode = self.tiles_to_encode / self.images_per_s if self.images_per_s else 0.0
        return self.setup_s + OVERHEAD * (decode + encode)

    def hours_on(self, workers: int) -> float:
        """The estimate on ``workers`` machines like this one.

        The per-tile work shared evenly; a lower bound: a cluster adds its own traffic.
        """
        return (self.setup_s + (self.seconds - self.setup_s) / max(workers, 1)) / 3600

    def text(self, workers: Sequence[int] = (1, 4, 16, 64)) -> str:
        """The plan as a user reads it."""
        rate = (f"{self.images_per_s:,.0f} images/s measured here ({self.encoder})" if self.images_per_s
                else "no stage 2: nothing is encoded")
        bound = " at most (under the bank rule the floor drops some first)" if self.images_per_s and \
            self.encode_bound else ""
        lines = [
            f"inputs: {self.inputs:,}"
            + (f" ({self.skipped} unusable, skipped)" if self.skipped else "")
            + (f" ({self.from_metadata:,} planned from their STAC metadata; only the sample window below opens a"
               " file)" if self.from_metadata else ""),
            f"tiles: {self.tiles:,} in {counted(self.tasks, 'window task')}",
            f"to decode: {self.bytes_to_decode / 1e9:,.2f} GB (decoding at {self.decode_mb_per_s:,.0f} MB/s here)",
            f"to encode: {self.tiles_to_encode:,} tiles{bound}",
            f"encoder: {rate}",
            f"estimate: {_duration(self.seconds)} on this machine; "
            + ", ".join(f"{_duration(self.hours_on(n) * 3600)} on {n} workers" for n in workers if n > 1),
            "nothing was written (a dry run)",
        ]
        return "\n".join(lines)


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def estimate_run(inputs: Sequence[str] | str, config: RunConfig | None = None, batches: int = 5,
                 **overrides) -> RunEstimate:
    """Plan a run without running it (see the module's docstring).

    Args:
        inputs: paths, globs or folders, as :func:`~rsprune_geo.pipeline.run` takes them.
        config: the run's parameters (``overrides`` set its fields).
        batches: encoder batches timed after one to warm up (the fastest counts).
        **overrides: :class:`~rsprune_geo.config.RunConfig` fields.

    Returns:
        The plan, with its estimate.

    Raises:
        InputError: what a run would refuse (no usable input, a parameter out of range…).

    """
    from .pipeline import plan_tiles
    from .stages.stage2 import Stage2Options, prepare_model

    config = replace(config or RunConfig(), **overrides).validated()
    paths = [inputs] if isinstance(inputs, (str, Path)) else list(inputs)
    texts = [str(p) for p in paths]
    sources: Sequence[RasterSource]
    if not config.chips and all(looks_like_stac(t) for t in texts):
        sources, skipped, from_metadata = stac_sources(texts, config)
    else:
        sources, skipped = scan_sources(texts, config.bands, config.allow_no_crs, config.chips, config.strict, None,
                                        config.asset)
        from_metadata = 0
    t0 = time.perf_counter()
    bank, _ = open_bank(config.prior_bank, config.cache_dir) if config.prior_bank else (None, [])
    if config.match_bank_scale:
        assert bank is not None
        config = matched_to_bank(config, bank, sources)
    grid = plan_tiles(sources, config)
    to_encode, encoder, speed = 0, None, None
    bound = config.stage1_rule is Stage1Rule.BANK
    setup = time.perf_counter() - t0
    if bank is not None and config.stage2:
        t0 = time.perf_counter()
        model = prepare_model(bank, Stage2Options.from_config(config), 0)
        setup += time.perf_counter() - t0
        try:
            encoder, speed = model.encoder.cache_key, _encoder_speed(model.encoder, batches)
        finally:
            model.close()
        to_encode = grid.count if bound else int(round(config.stage1_fraction * grid.count))
    return RunEstimate(len(sources), len(skipped), grid.count, len(grid.tasks), decode_bytes(grid), to_encode,
                       encoder, speed, _decode_speed(grid), setup, bound, from_metadata)


def stac_sources(texts: Sequence[str], config: RunConfig) -> tuple[list[RasterSource], list[SkippedInput], int]:
    """The rasters of STAC inputs, each planned from its item's metadata where it says enough.

    Args:
        texts: STAC catalogues, item collections, items or stac-geoparquet files.
        config: the run's parameters (its asset, bands, strictness).

    Returns:
        The sources, the items that could not be used, and how many were planned from metadata
        (the others were opened, as a run opens them).

    Raises:
        InputError: an item without the asset, a broken href, no usable item (or any, with
            ``strict``).
    """
    sources: list[RasterSource] = []
    skipped: list[SkippedInput] = []
    first_error: InputError | None = None
    from_metadata = 0
    for text in texts:
        lean = list(stac_paths(text, config.asset, stack=False))
        lacking = {i for i, path in enumerate(lean) if path.grid is None or not path.grid.complete}
        full = list(stac_paths(text, config.asset)) if lacking else []  # their rasters, stacked where need be
        for i, path in enumerate(lean):
            if i not in lacking:
                assert path.grid is not None
                try:  # a plan reads one sample window at most (of a separate-band item, its red file): unchecked
                    sources.append(replace(planned_source(path, path.grid, config.bands), planned=False))
                except InputError as error:
                    if config.strict:
                        raise
                    first_error = first_error or error
                    skipped.append({"path": str(path), "error": str(error)})
                    continue
                from_metadata += 1
                continue
            try:
                opened = open_source(str(full[i]), config.bands, config.allow_no_crs)
            except InputError as error:
                if config.strict:
                    raise
                first_error = first_error or error
                skipped.append({"path": str(full[i]), "error": str(error)})
                continue
            stamped = (("STAC item datetime", path.datetime),) if path.datetime else ()
            sources.append(replace(opened, date_tags=stamped + opened.date_tags, stac_item=path.item_id,
                                   stac_href=path.item_href))
    if not sources and first_error is not None:
        raise first_error
    return sources, skipped, from_metadata


def decode_bytes(grid: RunGrid) -> int:
    """Bytes the run's windows decode.

    Each source's tiled extent (overlaps once) times its bands and sample size; a folder of chips from a
    sample of its chips.
    """
    if grid.chips is not None:
        chips = grid.chips
        n = len(chips)
        step = max(1, n // CHIP_SAMPLE)
        sample = [_grid_bytes(chips[i]) for i in range(0, n, step)]
        return int(np.mean(sample) * chips.tiles) if sample else 0
    return sum(_grid_bytes(g) for g in grid.sources)


def _grid_bytes(grid: SourceGrid) -> int:
    source = grid.source
    itemsize = np.dtype(source.dtype).itemsize
    return _covered(grid.rows, grid.height, source.height) * _covered(grid.cols, grid.width, source.width) * \
        len(source.bands) * itemsize


def _covered(offsets: np.ndarray, size: int, length: int) -> int:
    """Pixels of an axis of ``length`` that tiles of ``size`` at ``offsets`` cover (overlaps once)."""
    if offsets.size == 0:
        return 0
    starts = np.sort(offsets.astype(np.int64))
    ends = np.minimum(starts + size, length)
    reach = np.maximum.accumulate(ends)
    previous = np.concatenate([[0], reach[:-1]])
    return int(np.maximum(ends - np.maximum(starts, previous), 0).sum())


def _encoder_speed(encoder, batches: int) -> float:
    """Images a second through ``encoder.encode`` at the batch a run hands it.

    That batch is :func:`~rsprune_geo.engine.passes.run_batch_size`. The fastest of ``batches`` batches
    after one to warm up counts: the encoder's floor (a run's overhead is added to it, see
    :data:`OVERHEAD`).
    """
    size, n = encoder.input_size, max(run_batch_size(encoder), 1)
    images = np.random.default_rng(0).integers(0, 256, (n, size, size, 3), dtype=np.uint8)
    encoder.encode(images)
    fastest = float("inf")
    for _ in range(max(batches, 1)):
        t0 = time.perf_counter()
        encoder.encode(images)
        fastest = min(fastest, time.perf_counter() - t0)
    return n / max(fastest, 1e-9)


def _decode_speed(grid: RunGrid) -> float:
    """MB a second decoding one window (up to ``SAMPLE_PX`` a side) of the first tiled source."""
    from rasterio.windows import Window

    first = next(iter(grid.sources), None)
    if first is None:
        return 1.0
    source = first.source
    with source.open() as src:
        window = Window(0, 0, min(SAMPLE_PX, src.width), min(SAMPLE_PX, src.height))
        bands = [b for b in source.bands if b <= src.count] or [1]  # an item's red asset stands for its three
        t0 = time.perf_counter()
        data = src.read(bands, window=window)
        seconds = max(time.perf_counter() - t0, 1e-6)
    return data.nbytes / 1e6 / seconds
