"""Tile embeddings: read each tile at the encoder's size (pixels), encode it, cache the vector."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np
import pandas as pd
from rasterio.io import DatasetReader
from rasterio.windows import Window

from ..features.base import Encoder
from ..features.cache import EmbeddingCache
from ..progress import ProgressCallback
from ..reading.pixels import Scaling, read_rgb
from ..reading.sources import RasterSource
from .scaleout import map_tasks


def encode_windows(source: RasterSource, windows: list[Window], scaling: Scaling, encoder: Encoder) -> np.ndarray:
    """Read and encode one batch of tiles (the unit of work sent to Dask workers)."""
    return encoder.encode(read_rgb(source, windows, encoder.input_size, scaling))


def embed_tiles(
    tiles: pd.DataFrame,
    sources: Mapping[str, RasterSource],
    scalings: Mapping[str, Scaling],
    encoder: Encoder,
    cache: EmbeddingCache | None = None,
    client: Any | None = None,
    out: np.ndarray | None = None,
    on_progress: ProgressCallback | None = None,
) -> np.ndarray:
    """Embeddings (N, dim) of ``tiles`` (columns source, tile_id, row_off, col_off, width, height).

    Reusing cached vectors and caching new ones batch by batch.

    ``out``: where to write them, e.g. a memory-mapped ``.npy`` so that millions of tiles need
    no more memory than one batch (default: a new in-memory array). With a
    ``distributed.Client`` the batches run on its workers (the encoder is sent to each once;
    workers open the files by path); locally the encoder runs in this thread (it uses every core)
    while a second thread reads and resizes the next batch. ``on_progress("encoding", done,
    total)`` counts encoded tiles.
    """
    if out is None:
        out = np.zeros((len(tiles), encoder.dim), dtype=np.float32)
    def use_cached(positions: np.ndarray, dst: np.ndarray, vectors: np.ndarray) -> None:
        out[positions[dst]] = vectors

    batches = pending_batches(tiles, sources, encoder, cache, use_cached)
    total = sum(b[1].size for b in batches)
    tasks = [(sources[path], windows, scalings[path]) for path, _, _, windows in batches]
    results = (map_tasks(encode_windows, tasks, client, broadcast={"encoder": encoder}) if client is not None
               else read_ahead(tasks, encoder))
    done = 0
    for i, vectors in results:
        path, batch, ids, _ = batches[i]
        out[batch] = vectors
        if cache is not None:
            cache.store(sources[path].fingerprint, ids, vectors)
        done += batch.size
        if on_progress is not None:
            on_progress("encoding", done, total)
    return out


def pending_batches(tiles: pd.DataFrame, sources: Mapping[str, RasterSource], encoder: Encoder,
             cache: EmbeddingCache | None, use_cached) -> list[tuple[str, np.ndarray, list[str], list[Window]]]:
    """The batches still to encode, ``(source path, positions, tile ids, windows)``.

    Cached vectors are handed to ``use_cached(positions, dst, vectors)`` shard by shard.
    """
    todo: list[tuple[str, np.ndarray]] = []
    tile_ids = tiles["tile_id"].to_numpy()
    for path, positions in tiles.groupby("source", sort=False).indices.items():
        source = sources[path]
        if cache is not None:
            found = np.zeros(positions.size, dtype=bool)
            for dst, vectors in cache.cached(source.fingerprint, tile_ids[positions].tolist(), encoder.dim):
                use_cached(positions, dst, vectors)
                found[dst] = True
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
    return batches


def read_ahead(tasks: list[tuple], encoder: Encoder) -> Iterator[tuple[int, np.ndarray]]:
    """Encode the batches in order, reading batch ``i + 1`` on a thread while ``i`` is encoded."""
    if not tasks:
        return
    # the current source stays open while its batches are read: blocks decode once
    opened: dict[str, DatasetReader] = {}

    def read_batch(source: RasterSource, windows: list[Window], scaling: Scaling) -> np.ndarray:
        if source.path not in opened:  # batches come source by source: close the previous one
            for dataset in opened.values():
                dataset.close()
            opened.clear()
            opened[source.path] = source.open()
        return read_rgb(source, windows, encoder.input_size, scaling, opened[source.path])

    try:
        with ThreadPoolExecutor(max_workers=1) as reader:
            pending: Future = reader.submit(read_batch, *tasks[0])
            for i in range(len(tasks)):
                images = pending.result()
                if i + 1 < len(tasks):
                    pending = reader.submit(read_batch, *tasks[i + 1])
                yield i, encoder.encode(images)
    finally:
        for dataset in opened.values():
            dataset.close()


