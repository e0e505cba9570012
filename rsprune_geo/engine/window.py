"""The window task: every pixel decoded once.

A task reads its windows one at a time, scores their tiles (stage 1), judges them against thresholds
known before reading (nodata limit, absolute entropy, the prior bank's floor), brings the tiles to
encode to the encoder's input size while their pixels are in memory, and writes its tiles as a part
of the tile table. Encoding happens in the same worker (a Dask task), or (locally) on the run's
thread while the next windows are read (:mod:`.passes`). Only compact columns travel back to the
driver.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from enum import Enum

import cv2
import numpy as np
import pandas as pd
from rasterio.crs import CRS
from rasterio.windows import Window

from ..errors import InputError
from ..features.base import Encoder
from ..features.cache import EmbeddingCache
from ..reading.grid import TaskTiles
from ..reading.ground import GroundGrid, cell_ids
from ..reading.pixels import Scaling, read_window
from ..reading.remote import redact
from ..runs.tiletable import write_part
from ..runs.vocabulary import Reason, ReasonContext, Status, reasons, status_code, status_names
from ..stages.clustering import SceneCentroids, assign_to_centroids
from ..stages.information import read_for_scoring, score_window, stage1_codes

cv2.setNumThreads(1)  # a resize is small: the run's parallelism is its windows, not OpenCV's threads


class Encode(Enum):
    """Which tiles a pass encodes.

    None (stage 1 alone), those stage 1 passed, or every tile (the evaluation compares selections in the
    embedding space of all of them).
    """

    NONE = "none"
    PASSED = "passed"
    ALL = "all"


@dataclass(frozen=True)
class PassSpec:
    """What every window task of a pass is told (sent to each worker once).

    ``folder``: where parts are written (``None``: no part, as in a second pass); the output
    ``crs`` and the ``ground`` grid; stage 1's thresholds known before reading (``max_nodata``,
    ``entropy_min``, the bank's ``floor``); which tiles to ``encode``, at
    ``input_size``, cached under ``cache_root`` for the encoder ``encoder_key``; whether vectors
    travel back (``vectors``); whether source paths are written without credentials (``redact``);
    whether a window that cannot be read stops the run (``strict``) or its tiles are ``nodata``.
    """

    folder: str | None
    crs: CRS | None
    ground: GroundGrid
    max_nodata: float
    entropy_min: float | None
    floor: float | None
    encode: Encode = Encode.NONE
    input_size: int = 224
    encoder_key: str = ""
    cache_root: str | None = None
    vectors: bool = False
    redact: bool = False
    strict: bool = False


@dataclass
class WindowWork:
    """One window after reading.

    Its tiles' positions and stage-1 columns, and for the tiles to encode (``encode`` indexes
    ``positions``) their images, or their vectors when cached; for a window whose pixels could not be
    read, ``error`` (the source's path, the message); ``pack``: the embedding cache's pack its vectors
    go to (a chip's), else ``""`` (a shard of its own).
    """

    positions: np.ndarray
    status: np.ndarray
    reason: np.ndarray
    entropy: np.ndarray
    cell: np.ndarray
    encode: np.ndarray
    fingerprint: str = ""
    ids: list[str] = field(default_factory=list)
    images: np.ndarray | None = None
    vectors: np.ndarray | None = None
    cluster: np.ndarray | None = None
    distance: np.ndarray | None = None
    error: tuple[str, str] | None = None
    pack: str = ""


def window_works(task: Sequence[TaskTiles], scalings: Sequence[Scaling], spec: PassSpec,
                 wanted: np.ndarray | None = None) -> Iterator[WindowWork]:
    """Read a task's windows once each.

    ``task`` holds a :class:`TaskTiles` for each source it reads, with each source's ``scalings``. The
    windows' work is yielded; the task's part is written when the last window is done. ``wanted`` (a
    second pass) names the positions to encode: the windows are read again for them only, nothing is
    scored and no part is written.
    """
    rows: list[dict[str, np.ndarray]] = []
    cache = EmbeddingCache(spec.cache_root, spec.encoder_key) if spec.encode is not Encode.NONE else None
    pack = _ChipPack.of(task, cache) if cache is not None and all(t.chip for t in task) else None
    for tiles, scaling in zip(task, scalings, strict=True):
        for work, window_rows in _source_works(tiles, scaling, spec, wanted, cache, pack):
            if window_rows is not None:
                rows.append(window_rows)
            yield work
    if rows and spec.folder is not None:
        write_part(spec.folder, task[0].part, _frame(rows), spec.crs)


@dataclass
class _ChipPack:
    """A task of chips' pack in the embedding cache.

    Its name (from every chip's fingerprint and tile id, so it names the same chips in every run) and
    the vectors it already holds.
    """

    name: str
    vectors: dict[str, np.ndarray]

    @classmethod
    def of(cls, task: Sequence[TaskTiles], cache: EmbeddingCache) -> _ChipPack:
        keys = [key for tiles in task for _, _, rows, cols in tiles.iter_windows()
                for key in _pack_keys(tiles.source.fingerprint, tiles.tile_ids(rows, cols))]
        name = hashlib.blake2b("\n".join(keys).encode(), digest_size=12).hexdigest()
        return cls(name, cache.load_pack(name))

    def lookup(self, keys: list[str]) -> np.ndarray | None:
        """The vectors of these keys when the pack holds them all, else ``None``."""
        if not keys or any(key not in self.vectors for key in keys):
            return None
        return np.stack([self.vectors[key] for key in keys]).astype(np.float32)


def _pack_keys(fingerprint: str, ids: list[str]) -> list[str]:
    """Tiles' keys in a pack: their source's fingerprint and their tile id."""
    return [f"{fingerprint}/{tile_id}" for tile_id in ids]


def _source_works(tiles: TaskTiles, scaling: Scaling, spec: PassSpec, wanted: np.ndarray | None,
                  cache: EmbeddingCache | None, pack: _ChipPack | None = None
                  ) -> Iterator[tuple[WindowWork, dict[str, np.ndarray] | None]]:
    """One source's windows of a task: each window's work and (a first pass) its tile rows.

    A source planned from its STAC item is opened once here first, and checked: one that fails
    has every window unreadable, for the reason it gave (``strict`` stops the run).
    """
    failed = None
    if tiles.source.planned:
        try:
            tiles = replace(tiles, source=tiles.source.settled())
        except InputError as exc:
            if spec.strict:
                raise
            failed = (tiles.source.path, str(exc))
    for window, positions, row_off, col_off in tiles.iter_windows():
        n = positions.size
        rows_in, cols_in = row_off - int(window.row_off), col_off - int(window.col_off)
        data, error = None, None
        if wanted is None:
            (data, valid, use_nodata, nodata), unreadable, error = _read_tolerant(tiles, window, rows_in, cols_in,
                                                                                  spec.strict, failed)
            scores = score_window(data, valid, use_nodata, nodata, scaling, rows_in, cols_in,
                                  np.full(n, tiles.height), np.full(n, tiles.width))
            status, reason = stage1_codes(scores["entropy"], scores["nodata_fraction"], spec.max_nodata,
                                          spec.entropy_min, spec.floor)
            status[unreadable], reason[unreadable] = status_code(Status.NODATA), Reason.UNREADABLE
            encode, entropy = _to_encode(status, spec.encode), scores["entropy"]
            footprints, cells = _footprints(tiles, row_off, col_off, spec)
        else:  # a second pass: nothing scored; the window is read only for tiles it must encode
            status, reason = np.zeros(n, np.uint8), np.zeros(n, np.uint8)
            encode, entropy, scores = np.isin(positions, wanted), np.zeros(n), {}
            footprints, cells = None, np.full((n, 2), -1, dtype=np.int32)
        work = WindowWork(positions, status, reason, entropy, cells, np.flatnonzero(encode), tiles.source.fingerprint,
                          error=error)
        if work.encode.size:
            work.ids = tiles.tile_ids(row_off[work.encode], col_off[work.encode])
            if pack is not None:
                work.pack = pack.name
                work.vectors = pack.lookup(_pack_keys(tiles.source.fingerprint, work.ids))
            else:
                work.vectors = cache.load(tiles.source.fingerprint, work.ids) if cache is not None else None
            if work.vectors is None:
                if data is None:
                    data = read_for_scoring(tiles.source, window)[0]
                work.images = _resized(data, scaling, rows_in[work.encode], cols_in[work.encode], tiles,
                                       spec.input_size)
        yield work, (_rows(tiles, row_off, col_off, scores, status, reason, footprints, cells, spec)
                     if footprints is not None else None)


def _read_tolerant(tiles: TaskTiles, window: Window, rows_in: np.ndarray, cols_in: np.ndarray, strict: bool,
                   failed: tuple[str, str] | None = None
                   ) -> tuple[tuple[np.ndarray, np.ndarray, bool, float], np.ndarray, tuple[str, str] | None]:
    """A window's pixels for scoring (:func:`~rsprune_geo.stages.information.read_for_scoring`).

    Which tiles could not be read, and the error. A window that fails to read (a damaged block of a
    file, a server gone) is read again tile by tile: tiles that read are scored as ever, the others'
    pixels are invalid (they are ``nodata``, for a reason that says so). A file that no longer answers
    at all (gone, a server down) stops the run, as does any error with ``strict``. A source planned
    from its STAC item that ``failed`` to open (the scan never opened it) is unreadable whole.
    """
    unreadable = np.zeros(rows_in.size, dtype=bool)
    source = tiles.source
    if failed is not None:
        unreadable[:] = True
        data = np.zeros((len(source.bands), int(window.height), int(window.width)), dtype=source.dtype)
        return (data, np.zeros(data.shape[1:], dtype=bool), False, 0.0), unreadable, failed
    try:
        return read_for_scoring(source, window), unreadable, None
    except InputError as exc:
        if strict:
            raise
        failure = exc
    try:  # the pixel the scan read: a file that fails here is gone, not damaged in part
        read_window(source, Window(0, 0, 1, 1))
    except InputError:
        raise failure from None
    error = (source.path, str(failure))
    data = np.zeros((len(source.bands), int(window.height), int(window.width)), dtype=source.dtype)
    valid = np.zeros(data.shape[1:], dtype=bool)
    for k, (r, c) in enumerate(zip(rows_in.tolist(), cols_in.tolist())):
        try:
            tile, tile_valid = read_window(source, Window(int(window.col_off) + c, int(window.row_off) + r,
                                                          tiles.width, tiles.height))
        except InputError:
            unreadable[k] = True
            continue
        data[:, r : r + tiles.height, c : c + tiles.width] = tile
        valid[r : r + tiles.height, c : c + tiles.width] = tile_valid
    return (data, valid, False, 0.0), unreadable, error


def _to_encode(status: np.ndarray, what: Encode) -> np.ndarray:
    """Which of a window's tiles a first pass encodes."""
    if what is Encode.ALL:
        return np.ones(status.size, dtype=bool)
    if what is Encode.PASSED:
        return status == status_code(Status.KEPT)
    return np.zeros(status.size, dtype=bool)


def _resized(data: np.ndarray, scaling: Scaling, rows: np.ndarray, cols: np.ndarray, tiles: TaskTiles,
             size: int) -> np.ndarray:
    """Tiles cut from a window's pixels, as uint8 RGB at ``size``² (see :func:`resize_tile`)."""
    out = np.empty((rows.size, size, size, 3), dtype=np.uint8)
    for k, (r, c) in enumerate(zip(rows.tolist(), cols.tolist())):
        resize_tile(scaling.to_uint8(data[:, r : r + tiles.height, c : c + tiles.width]), size, out[k])
    return out


def resize_tile(bands: np.ndarray, size: int, out: np.ndarray) -> np.ndarray:
    """One tile's uint8 bands (1 or 3, H, W) as RGB (``size``, ``size``, 3) in ``out``, band by band.

    Bilinear (OpenCV) when every source pixel still reaches the output (shrinking by less than 2), else
    by pixel area (antialiased). One band is repeated as grey.
    """
    h, w = bands.shape[1:]
    shrink = max(h, w) >= 2 * size
    how = cv2.INTER_AREA if shrink else cv2.INTER_LINEAR
    for b in range(3):
        band = bands[min(b, bands.shape[0] - 1)]
        out[..., b] = band if (h, w) == (size, size) else cv2.resize(band, (size, size), interpolation=how)
    return out


def _footprints(tiles: TaskTiles, row_off: np.ndarray, col_off: np.ndarray,
                spec: PassSpec) -> tuple[np.ndarray, np.ndarray]:
    """The tiles' footprints in the output CRS and their ground cells (int32 row, column)."""
    shapes = tiles.footprints(row_off, col_off)
    if spec.crs is not None and tiles.source.crs is not None and tiles.source.crs != spec.crs:
        import geopandas as gpd

        shapes = gpd.GeoSeries(shapes, crs=tiles.source.crs).to_crs(spec.crs).values
    return shapes, spec.ground.cells(shapes).astype(np.int32)


def _rows(tiles: TaskTiles, row_off: np.ndarray, col_off: np.ndarray, scores: dict, status: np.ndarray,
          reason: np.ndarray, footprints: np.ndarray, cells: np.ndarray, spec: PassSpec) -> dict[str, np.ndarray]:
    """A window's rows of the tile table as columns.

    As stage 1 leaves them (the run writes its decisions back once every tile is judged); :func:`_frame`
    makes a part's table of them.
    """
    n = row_off.size
    context = ReasonContext(max_nodata=spec.max_nodata, entropy_min=spec.entropy_min, floor=spec.floor)
    return {
        "tile_id": np.array(tiles.tile_ids(row_off, col_off), dtype=object),
        "source": np.full(n, redact(tiles.source.path) if spec.redact else tiles.source.path, dtype=object),
        "row_off": row_off.astype(np.int64), "col_off": col_off.astype(np.int64),
        "width": np.full(n, tiles.width, dtype=np.int64), "height": np.full(n, tiles.height, dtype=np.int64),
        **scores,
        "entropy_rank": np.zeros(n, dtype=np.int64),
        "status": np.asarray(status_names(status), dtype=object),
        "reason": np.asarray(reasons(reason, context, scores["entropy"], scores["nodata_fraction"]), dtype=object),
        "ground_cell": np.asarray(cell_ids(cells), dtype=object),
        "date": np.full(n, tiles.date, dtype="datetime64[ns]"),
        "geometry": footprints,
    }


def _frame(rows: list[dict[str, np.ndarray]]) -> pd.DataFrame:
    """One table of windows' rows.

    Made once a part: a table a window costs more than its tiles when windows are chips.
    """
    return pd.DataFrame({name: np.concatenate([r[name] for r in rows]) for name in rows[0]})


def encode_works(works: list[WindowWork], encoder: Encoder, centroids: SceneCentroids,
                 spec: PassSpec) -> None:
    """Encode the images of some windows in batches (in place).

    Each window gets its tiles' nearest ``cluster`` and ``distance`` (and its ``vectors`` when the pass
    keeps them); new vectors are cached window by window.
    """
    todo = [w for w in works if w.images is not None and len(w.images)]
    if todo:
        images = np.concatenate([w.images for w in todo]) if len(todo) > 1 else todo[0].images
        assert images is not None
        vectors = np.concatenate([encoder.encode(images[i : i + encoder.batch_size])
                                  for i in range(0, len(images), encoder.batch_size)])
        start = 0
        cache = EmbeddingCache(spec.cache_root, spec.encoder_key)
        packed: dict[str, tuple[list[str], list[np.ndarray]]] = {}
        for w in todo:
            w.vectors = vectors[start : start + len(w.ids)]
            start += len(w.ids)
            if w.pack:  # a chip's vectors go to its task's pack, a shard for the batch
                keys, held = packed.setdefault(w.pack, ([], []))
                keys.extend(_pack_keys(w.fingerprint, w.ids))
                held.append(w.vectors)
            else:
                cache.store(w.fingerprint, w.ids, w.vectors)
            w.images = None
        for name, (keys, held) in packed.items():
            cache.store_pack(name, keys, np.concatenate(held))
    for w in works:
        if w.vectors is not None and len(w.vectors):
            ids, dist = assign_to_centroids(w.vectors, centroids)
            w.cluster, w.distance = ids.astype(np.int32), dist.astype(np.float32)
        if not spec.vectors:
            w.vectors = None
