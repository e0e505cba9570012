"""Stage 1, the information filter: per-tile entropy, nodata fraction and band statistics."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd

from ..choices import Scheduler
from ..config import DEFAULT_PLAUSIBILITY_Z
from ..engine._kernels import tile_sums
from ..engine.columns import TileColumns
from ..engine.scaleout import map_tasks
from ..progress import ProgressCallback
from ..reading.pixels import MaskMode, Scaling, read_image, read_plain, read_window, source_scaling, window_inside
from ..reading.sources import RasterSource
from ..reading.tiling import group_tiles, union_window
from ..runs.vocabulary import TILING_COLUMNS, Reason, ReasonContext, Status, reasons, status_code, status_names

#: BT.601 luma weights in 1/256ths (77 + 150 + 29 = 256): integer luma on uint8, within 1 level.
_LUMA_INT = np.array([77, 150, 29], dtype=np.uint16)
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)

def grey_levels(data: np.ndarray, scaling: Scaling = Scaling()) -> np.ndarray:
    """Grey levels 0–255 (uint8) of a block of pixels.

    BT.601 luma of RGB, or the band itself. uint8 data use exact integer luma; other dtypes are
    first scaled per band by ``scaling``.

    Args:
        data: a (bands, rows, cols) block of 1 or 3 bands.
        scaling: the per-band stretch of non-uint8 data (see :func:`source_scaling`).

    Returns:
        A (rows, cols) uint8 array.
    """
    if data.ndim != 3 or data.shape[0] not in (1, 3):
        raise ValueError("data must be shaped (1 or 3 bands, rows, cols)")
    if scaling.identity:
        if data.dtype != np.uint8:
            raise ValueError("non-uint8 data need a Scaling (see source_scaling)")
        if data.shape[0] == 1:
            return data[0]
        return _luma8(data)
    assert scaling.low is not None and scaling.high is not None
    scaled = np.empty(data.shape, dtype=np.float32)
    for i, band in enumerate(data):
        lo, hi = scaling.low[i], scaling.high[i]
        np.subtract(band, lo, out=scaled[i], dtype=np.float32, casting="unsafe")
        scaled[i] *= np.float32(255.0 / (hi - lo))
    np.clip(scaled, 0, 255, out=scaled)
    scaled = np.nan_to_num(scaled, copy=False)
    grey = scaled[0] if data.shape[0] == 1 else np.tensordot(_LUMA, scaled, axes=1)
    return np.rint(grey).astype(np.uint8)


def _luma8(data: np.ndarray, chunk_px: int = 1 << 17) -> np.ndarray:
    """Integer BT.601 luma of uint8 RGB.

    By strips of about ``chunk_px`` pixels (the uint16 scratch stays in cache: 3x faster than
    whole-window arrays).
    """
    height, width = data.shape[1:]
    out = np.empty((height, width), dtype=np.uint8)
    rows = max(1, chunk_px // max(width, 1))
    acc = np.empty((min(rows, height), width), dtype=np.uint16)
    term = np.empty_like(acc)
    for r in range(0, height, rows):
        a, b, strip = acc[: min(rows, height - r)], term[: min(rows, height - r)], data[:, r : r + rows]
        np.multiply(strip[0], _LUMA_INT[0], out=a, dtype=np.uint16)
        np.multiply(strip[1], _LUMA_INT[1], out=b, dtype=np.uint16)
        a += b
        np.multiply(strip[2], _LUMA_INT[2], out=b, dtype=np.uint16)
        a += b
        a += 128
        a >>= 8
        np.copyto(out[r : r + rows], a, casting="unsafe")
    return out


def shannon_entropy(histogram: np.ndarray) -> float:
    """Shannon entropy in bits of a histogram of counts.

    Args:
        histogram: counts, any shape.

    Returns:
        The entropy in bits; 0 for an empty histogram.
    """
    counts = np.asarray(histogram, dtype=np.float64)
    total = counts.sum()
    if total <= 0:
        return 0.0
    p = counts[counts > 0] / total
    return float(-(p * np.log2(p)).sum() + 0.0)


def image_entropy(rgb: np.ndarray) -> float:
    """Entropy (bits) of the BT.601 luma of one uint8 RGB image shaped (H, W, 3)."""
    grey = grey_levels(np.ascontiguousarray(np.asarray(rgb, dtype=np.uint8).transpose(2, 0, 1)))
    return shannon_entropy(np.bincount(grey.ravel(), minlength=256))


def bank_entropies(paths: list[str], scale: float = 1.0) -> np.ndarray:
    """Entropy (bits) of each prior-bank image.

    Resized by ``scale`` first (``scale < 1`` brings the bank's finer pixels to the tiles' coarser pixel
    size).
    """
    return np.array([image_entropy(read_image(p, scale=scale)) for p in paths], dtype=np.float64)


def tile_statistics(data: np.ndarray, valid: np.ndarray, scaling: Scaling = Scaling()) -> dict:
    """Stage-1 statistics of one tile.

    Statistics use valid pixels only; a tile with none has entropy 0, nodata fraction 1 and NaN
    band statistics.

    Args:
        data: a (bands, rows, cols) block.
        valid: its (rows, cols) validity mask.
        scaling: the per-band stretch of non-uint8 data.

    Returns:
        ``entropy`` (bits), ``nodata_fraction``, and each band's ``mean`` and ``std``.
    """
    grey = grey_levels(data, scaling)
    n = valid.size
    n_valid = int(np.count_nonzero(valid))
    row = {"entropy": 0.0, "nodata_fraction": 1.0 - n_valid / n if n else 1.0}
    if n_valid == n:
        hist = np.bincount(grey.ravel(), minlength=256)
        values = data.reshape(data.shape[0], -1)
    elif n_valid:
        hist = np.bincount(grey[valid], minlength=256)
        values = data[:, valid]
    else:
        hist = None
        values = None
    if hist is not None:
        row["entropy"] = shannon_entropy(hist)
    for i in range(data.shape[0]):
        if values is None:
            row[f"b{i + 1}_mean"] = np.nan
            row[f"b{i + 1}_std"] = np.nan
        else:
            band = values[i].astype(np.float64, copy=False)
            mean = band.mean()
            row[f"b{i + 1}_mean"] = float(mean)
            row[f"b{i + 1}_std"] = float(np.sqrt(max(np.mean(band * band) - mean * mean, 0.0)))
    return row


def score_window(data: np.ndarray, valid: np.ndarray, use_nodata: bool, nodata: float, scaling: Scaling,
                 rows: np.ndarray, cols: np.ndarray, heights: np.ndarray, widths: np.ndarray) -> dict[str, np.ndarray]:
    """Stage-1 figures of tiles inside one window's pixels, over views of them (no per-tile copies).

    ``entropy``, ``nodata_fraction`` and each band's ``b<i>_mean``/``b<i>_std``, the same figures as
    :func:`tile_statistics` per tile.

    ``data`` is (bands, H, W); ``valid`` a (H, W) mask, or (0, 0) to take validity from
    ``nodata`` (``use_nodata``) and NaN; tiles are given by their window-relative offsets and sizes.
    """
    grey = grey_levels(data, scaling)
    offsets = (np.asarray(rows, np.int64), np.asarray(cols, np.int64), np.asarray(heights, np.int64),
               np.asarray(widths, np.int64))
    hist, count, sums, squares = tile_sums(data, grey, valid, nodata, use_nodata, *offsets,
                                           nodata_is_grey=scaling.identity)
    size = (offsets[2] * offsets[3]).astype(np.float64)
    columns: dict[str, np.ndarray] = {"entropy": _entropy_rows(hist), "nodata_fraction": 1.0 - count / size}
    empty = count == 0
    with np.errstate(divide="ignore", invalid="ignore"):
        means = sums / count[:, None]
        stds = np.sqrt(np.maximum(squares / count[:, None] - means * means, 0.0))
    means[empty], stds[empty] = np.nan, np.nan
    for b in range(data.shape[0]):
        columns[f"b{b + 1}_mean"], columns[f"b{b + 1}_std"] = means[:, b], stds[:, b]
    return columns


def read_for_scoring(source: RasterSource, window) -> tuple[np.ndarray, np.ndarray, bool, float]:
    """A window's pixels as the scoring kernel takes them.

    ``(data, valid, use_nodata, nodata)``, validity as an array only where it must be (masks, alpha
    bands, windows past the edge).
    """
    if window_inside(window, source.width, source.height) and source.mask_mode in (MaskMode.NODATA, MaskMode.NONE):
        use_nodata = source.mask_mode == MaskMode.NODATA
        nodata = float(source.nodata) if use_nodata and source.nodata is not None else 0.0
        return read_plain(source, window), np.zeros((0, 0), dtype=bool), use_nodata, nodata
    data, valid = read_window(source, window)
    return data, valid, False, 0.0


def score_group(
    source: RasterSource, tiles: pd.DataFrame, scaling: Scaling
) -> pd.DataFrame:
    """Read the window covering ``tiles`` once and score each tile in it.

    The tiles are one source's (:func:`score_window`). Returns one row per tile (columns ``entropy``,
    ``nodata_fraction``, ``b<i>_mean``, ``b<i>_std``, ``tile_id``), in the order of ``tiles``.
    """
    window = union_window(tiles, range(len(tiles)))
    data, valid, use_nodata, nodata = read_for_scoring(source, window)
    columns = score_window(data, valid, use_nodata, nodata, scaling,
                           tiles.row_off.to_numpy(np.int64) - int(window.row_off),
                           tiles.col_off.to_numpy(np.int64) - int(window.col_off),
                           tiles.height.to_numpy(np.int64), tiles.width.to_numpy(np.int64))
    columns["tile_id"] = tiles.tile_id.to_numpy()
    return pd.DataFrame(columns)


def _entropy_rows(hist: np.ndarray) -> np.ndarray:
    """Shannon entropy (bits) of each row of a histogram matrix."""
    total = hist.sum(axis=1, keepdims=True).astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        p = np.where(total > 0, hist / np.maximum(total, 1), 0.0)
        terms = np.where(p > 0, p * np.log2(np.where(p > 0, p, 1.0)), 0.0)
    return -terms.sum(axis=1) + 0.0


def score_tiles(
    sources: Sequence[RasterSource],
    tiles: Sequence[gpd.GeoDataFrame],
    scalings: Sequence[Scaling] | None = None,
    group_px: int = 2048,
    scheduler: Scheduler | str = Scheduler.THREADS,
    on_progress: ProgressCallback | None = None,
    client: Any | None = None,
) -> pd.DataFrame:
    """Stage-1 statistics for every tile of every source.

    One task reads one window of about ``group_px`` square (a group of tiles), so memory per
    task is bounded.

    Args:
        sources: the rasters.
        tiles: each source's tiles (see :func:`make_tiles`), in the order of ``sources``.
        scalings: each source's stretch; ``None`` measures it (:func:`source_scaling`).
        group_px: the side of a task's window, in pixels.
        scheduler: ``threads``, ``processes`` or ``sync`` (in this thread).
        on_progress: called as ``on_progress("stage1", done, total)`` as windows finish.
        client: a ``distributed.Client`` whose workers run the tasks.

    Returns:
        One row a tile, indexed like the concatenation of ``tiles``: entropy (bits), nodata
        fraction, per-band mean and std.
    """
    if scalings is None:
        scalings = [source_scaling(s) for s in sources]
    tasks, places = [], []
    start = 0
    for source, frame, scaling in zip(sources, tiles, scalings):
        plain = pd.DataFrame(frame[list(TILING_COLUMNS)])
        for positions in group_tiles(plain, group_px):
            tasks.append((source, plain.iloc[positions], scaling))
            places.append(start + np.asarray(positions, dtype=np.int64))
        start += len(frame)
    results: list[pd.DataFrame | None] = [None] * len(tasks)
    mode = Scheduler.parse(scheduler, "scheduler")
    threads = 1 if mode is Scheduler.SYNC else None
    processes = mode is Scheduler.PROCESSES
    for done, (i, group) in enumerate(map_tasks(score_group, tasks, client, threads, processes=processes), start=1):
        results[i] = group.set_axis(places[i])  # the tiles' positions in the concatenation of ``tiles``
        if on_progress is not None:
            on_progress("stage1", done, len(tasks))
    if not results:
        return pd.DataFrame()
    stats = pd.concat(results).sort_index()
    return stats[["tile_id", *(c for c in stats.columns if c != "tile_id")]].reset_index(drop=True)


@dataclass(frozen=True)
class EntropyFloor:
    """The entropy (bits) below which a tile is implausible for every scene of a prior bank.

    ``per_scene[name]`` is each scene's own floor (median − z · 1.4826 · MAD of its bank
    images' entropies, measured at the tiles' pixel size); ``bits`` is the lowest of them: a
    tile under it looks like no scene the bank knows (blank, cloud, flat water, haze).
    """

    bits: float
    per_scene: dict[str, float]
    z: float


def plausibility_floor(
    entropies: np.ndarray, labels: np.ndarray, z: float = DEFAULT_PLAUSIBILITY_Z
) -> EntropyFloor:
    """The :class:`EntropyFloor` of a labelled bank from its images' entropies (bits)."""
    entropies = np.asarray(entropies, dtype=np.float64)
    labels = np.asarray(labels).astype(str)
    if entropies.shape != labels.shape or entropies.size == 0:
        raise ValueError("need one entropy per labelled bank image")
    if z < 0:
        raise ValueError(f"z {z}: must be non-negative")
    per_scene = {}
    for scene in np.unique(labels):
        values = entropies[labels == scene]
        median = float(np.median(values))
        mad = float(np.median(np.abs(values - median))) * 1.4826
        per_scene[str(scene)] = max(0.0, median - z * mad)
    return EntropyFloor(bits=min(per_scene.values()), per_scene=per_scene, z=float(z))


def apportion_by_size(sizes: np.ndarray, count: int) -> np.ndarray:
    """Share ``count`` among groups in proportion to their sizes (largest remainder).

    Every non-empty group getting at least one while the count allows; exact total, none over size.
    """
    sizes = np.asarray(sizes, dtype=np.int64)
    count = int(min(max(count, 0), sizes.sum()))
    out = np.zeros_like(sizes)
    if count == 0:
        return out
    nonempty = np.flatnonzero(sizes > 0)
    if count <= nonempty.size:  # not enough for one each: the biggest groups first
        order = nonempty[np.lexsort((nonempty, -sizes[nonempty]))]
        out[order[:count]] = 1
        return out
    out[nonempty] = 1
    left = count - nonempty.size
    room = sizes - out
    target = room * (left / max(int(room.sum()), 1))
    add = np.minimum(np.floor(target + 1e-9).astype(np.int64), room)
    remainder = target - add
    rest = left - int(add.sum())
    while rest > 0:
        open_ = np.flatnonzero(add < room)
        take = open_[np.lexsort((open_, -remainder[open_]))][:rest]
        add[take] += 1
        remainder[take] = -np.inf
        rest = left - int(add.sum())
    return out + add


def stratified_entropy_cut(
    entropy: np.ndarray, strata: np.ndarray, count: int, tile_ids: np.ndarray, scratch: bool = False
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Keep ``count`` tiles by entropy *within* each stratum (e.g. each tile's nearest scene).

    Each stratum's share is proportional to its size and at least one tile while the count
    allows, so no stratum is wiped out; inside it the highest entropy goes first (ties by
    ``tile_ids``, or any keys that sort like them). ``strata`` are labels, or non-negative int
    codes (then nothing is sorted but the tiles: memory stays a few bytes a tile); ``scratch``:
    ``entropy`` is a copy the cut may overwrite. Returns (kept mask, rank inside the stratum from
    1 (int32), quota of each tile's stratum).
    """
    strata = np.asarray(strata)
    if strata.dtype.kind in "iu" and (strata.size == 0 or strata.min() >= 0):
        codes = strata
        sizes = np.bincount(codes, minlength=1)
    else:
        _, codes, sizes = np.unique(strata, return_inverse=True, return_counts=True)
    quotas = apportion_by_size(sizes, count)
    negated = np.negative(entropy, out=entropy if scratch else None)  # highest entropy first
    order = np.lexsort((np.asarray(tile_ids), negated, codes))
    del negated
    wide = np.int64 if order.size >= 1 << 31 else np.int32
    starts = np.r_[0, np.cumsum(sizes)[:-1]].astype(wide)
    ranked: np.ndarray = np.arange(1, order.size + 1, dtype=wide)
    np.subtract(ranked, starts[codes[order]], out=ranked)
    rank = np.empty(order.size, dtype=wide)
    rank[order] = ranked
    del ranked
    quota_of_tile = quotas.astype(wide)[codes]
    return rank <= quota_of_tile, rank, quota_of_tile


def stage1_codes(entropy: np.ndarray, nodata_fraction: np.ndarray, max_nodata: float = 0.25,
                 entropy_min: float | None = None, floor: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Stage 1's decisions that need no other tile, as one-byte codes ``(status, reason)``.

    ``nodata`` over the nodata limit, ``low_information`` under the absolute threshold or under the
    prior bank's floor (implausible for every scene); every other tile passes (``kept``).
    """
    entropy = np.asarray(entropy, dtype=np.float64)
    nodata_fraction = np.asarray(nodata_fraction, dtype=np.float64)
    status = np.full(entropy.size, status_code(Status.KEPT), dtype=np.uint8)
    reason = np.zeros(entropy.size, dtype=np.uint8)
    is_nodata = nodata_fraction > max_nodata
    status[is_nodata], reason[is_nodata] = status_code(Status.NODATA), Reason.NODATA
    low = ~is_nodata & (entropy < entropy_min) if entropy_min is not None else np.zeros(entropy.size, dtype=bool)
    status[low], reason[low] = status_code(Status.LOW_INFORMATION), Reason.ENTROPY_MIN
    if floor is not None:
        implausible = ~is_nodata & ~low & (entropy < floor)
        status[implausible], reason[implausible] = status_code(Status.LOW_INFORMATION), Reason.FLOOR
    return status, reason


def entropy_cut(columns: TileColumns, count: int | None, order_of: Callable[[np.ndarray], np.ndarray]
                ) -> tuple[float | None, int | None]:
    """Rank the tiles that passed stage 1's thresholds by entropy.

    The rank is ``entropy_rank``: 1 is the highest, ties in tile-id order. With ``count``, the top
    ``count`` are kept (the paper's global cut) and the others become ``low_information``. Returns the
    cut's entropy and count for the reasons (``(None, None)`` without a cut).
    """
    candidates = columns.where(Status.KEPT)
    order = candidates[np.lexsort((order_of(candidates), -columns.entropy[candidates]))]
    columns.entropy_rank[order] = np.arange(1, order.size + 1)
    if count is None or count >= order.size:
        return None, None
    threshold = float(columns.entropy[order[count - 1]]) if count > 0 else float("inf")
    columns.mark(order[count:], Status.LOW_INFORMATION, Reason.STAGE1_CUT)
    return threshold, count


def apply_information_filter(
    stats: pd.DataFrame,
    max_nodata: float = 0.25,
    entropy_min: float | None = None,
    keep_count: int | None = None,
    floor: EntropyFloor | None = None,
) -> pd.DataFrame:
    """Stage-1 decisions on a table of tile statistics.

    The same decisions a run takes, on plain data. Tiles under ``entropy_min`` bits, or under the
    prior bank's ``floor``, are ``low_information``. Of the rest, the ``keep_count`` with the highest
    entropy are kept; ties are broken by tile id, so the result is deterministic.

    Args:
        stats: one row a tile, with ``entropy`` and ``nodata_fraction`` (see :func:`score_tiles`).
        max_nodata: tiles with a larger nodata fraction are ``nodata``.
        entropy_min: an absolute entropy threshold in bits; ``None`` for none.
        keep_count: how many tiles pass, by entropy; ``None`` keeps every remaining tile.
        floor: the prior bank's entropy floor (implausible for every scene); ``None`` for none.

    Returns:
        ``stats`` with the columns ``status``, ``reason`` and ``entropy_rank``.
    """
    entropy = stats["entropy"].to_numpy(dtype=np.float64)
    columns = TileColumns.empty(len(stats))
    columns.entropy[:] = entropy
    columns.status[:], columns.reason[:] = stage1_codes(entropy, stats["nodata_fraction"].to_numpy(), max_nodata,
                                                        entropy_min, floor.bits if floor is not None else None)
    ids = stats["tile_id"].to_numpy()
    rank_of_id = np.argsort(np.argsort(ids, kind="stable"), kind="stable")
    cut_bits, cut_count = entropy_cut(columns, keep_count, lambda positions: rank_of_id[positions])
    context = ReasonContext(max_nodata=max_nodata, entropy_min=entropy_min,
                            floor=floor.bits if floor is not None else None, cut_bits=cut_bits, cut_count=cut_count)
    out = pd.DataFrame(index=stats.index)
    out["entropy_rank"] = columns.entropy_rank.astype(np.int64)
    out["status"] = status_names(columns.status)
    out["reason"] = reasons(columns.reason, context, entropy, stats["nodata_fraction"].to_numpy())
    return out
