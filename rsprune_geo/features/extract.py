"""Tile images at encoder size (windowed reads, overviews when smaller) and batched encoding."""

from __future__ import annotations

import numpy as np
import pandas as pd
from rasterio.enums import Resampling
from rasterio.windows import Window

from ..information import Scaling
from ..sources import RasterSource
from .base import Encoder
from .cache import EmbeddingCache


def to_rgb8(data: np.ndarray, scaling: Scaling) -> np.ndarray:
    """(bands, H, W) → (H, W, 3) uint8: uint8 as is, other dtypes by the stage-1 stretch; one
    band is repeated as grey."""
    if scaling.identity:
        out = data.astype(np.uint8, copy=False)
    else:
        out = np.empty(data.shape, dtype=np.uint8)
        for i, band in enumerate(data):
            lo, hi = scaling.low[i], scaling.high[i]
            scaled = (band.astype(np.float32) - lo) * np.float32(255.0 / (hi - lo))
            out[i] = np.clip(np.nan_to_num(scaled), 0, 255).astype(np.uint8)
    if out.shape[0] == 1:
        out = np.repeat(out, 3, axis=0)
    return np.ascontiguousarray(out.transpose(1, 2, 0))


def read_tile_images(
    source: RasterSource, windows: list[Window], size: int, scaling: Scaling
) -> np.ndarray:
    """The tiles' pixels resampled to ``size``² as uint8 RGB, (N, size, size, 3).

    GDAL reads from overviews when the encoder's input is smaller than the tile, so encoding a
    256-px tile at 64 px reads a quarter or less of the data. Windows reaching past the raster
    (padded tiles) read as 0 outside.
    """
    images = np.empty((len(windows), size, size, 3), dtype=np.uint8)
    with source.open() as src:
        for k, window in enumerate(windows):
            inside = (window.row_off >= 0 and window.col_off >= 0
                      and window.row_off + window.height <= source.height
                      and window.col_off + window.width <= source.width)
            data = src.read(
                source.bands, window=window, out_shape=(len(source.bands), size, size),
                resampling=Resampling.bilinear, boundless=not inside, fill_value=0,
            )
            images[k] = to_rgb8(data, scaling)
    return images


def encode_batch(encoder: Encoder, source: RasterSource, windows: list[Window], scaling: Scaling) -> np.ndarray:
    """Read and encode one batch of tiles (the unit of work sent to Dask workers)."""
    return encoder.encode(read_tile_images(source, windows, encoder.input_size, scaling))


def embed_tiles(
    tiles: pd.DataFrame,
    sources: dict[str, RasterSource],
    scalings: dict[str, Scaling],
    encoder: Encoder,
    cache: EmbeddingCache | None = None,
    progress: bool = True,
    client=None,
    out: np.ndarray | None = None,
    on_progress=None,
) -> np.ndarray:
    """Embeddings (N, dim) of ``tiles`` (columns source, tile_id, row_off, col_off, width,
    height), reusing cached vectors and caching new ones batch by batch.

    ``out``: where to write them, e.g. a memory-mapped ``.npy`` so that millions of tiles need
    no more memory than one batch (default: a new in-memory array).

    With a ``distributed.Client`` the batches run on its workers (the encoder is sent to each
    once; workers open the files by path), and each finished batch is cached as it arrives.
    """
    from tqdm.auto import tqdm

    if out is None:
        out = np.zeros((len(tiles), encoder.dim), dtype=np.float32)
    todo: list[tuple[str, np.ndarray]] = []
    for path, positions in tiles.groupby("source", sort=False).indices.items():
        source = sources[path]
        ids = tiles["tile_id"].to_numpy()[positions].tolist()
        if cache is not None:
            found = cache.fill(source.fingerprint, ids, out, positions)
            positions = positions[~found]
        if positions.size:
            todo.append((path, positions))
    batches = []
    rows = tiles.reset_index(drop=True)
    for path, positions in todo:
        for start in range(0, positions.size, encoder.batch_size):
            batch = positions[start : start + encoder.batch_size]
            part = rows.iloc[batch]
            windows = [Window(int(c), int(r), int(w), int(h)) for r, c, w, h in
                       zip(part.row_off, part.col_off, part.width, part.height)]
            batches.append((path, batch, part.tile_id.tolist(), windows))
    total = sum(b[1].size for b in batches)
    bar = tqdm(total=total, desc=f"encoding ({encoder.name})", unit="tile", disable=not progress or total == 0,
               leave=False)

    done = 0

    def finish(path, batch, ids, vectors):
        nonlocal done
        out[batch] = vectors
        if cache is not None:
            cache.store(sources[path].fingerprint, ids, vectors)
        bar.update(batch.size)
        done += batch.size
        if on_progress is not None:
            on_progress("encoding", done, total)

    if client is None:
        for path, batch, ids, windows in batches:
            finish(path, batch, ids, encode_batch(encoder, sources[path], windows, scalings[path]))
    elif batches:
        from distributed import as_completed

        remote = client.scatter(encoder, broadcast=True)
        futures = {client.submit(encode_batch, remote, sources[path], windows, scalings[path], pure=False):
                   (path, batch, ids) for path, batch, ids, windows in batches}
        for future in as_completed(futures):
            finish(*futures[future], future.result())
    bar.close()
    return out
