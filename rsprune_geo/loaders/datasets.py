"""A torch ``Dataset`` over a run's tiles, read window by window from the run's sources."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
from rasterio.io import DatasetReader
from rasterio.windows import Window

from ..errors import InputError
from ..reading.pixels import read_all_bands, read_chip, window_inside
from ..reading.remote import read_errors
from ..runs.runfile import read_run
from ..runs.vocabulary import Status

#: What ``TileDataset`` returns as the image: the raw values of every band, the raw values of
#: the run's bands, or the run's 8-bit RGB rendering (its bands and grey-level stretch).
PIXEL_MODES = ("all", "bands", "rgb")


def choose_tiles(tiles: pd.DataFrame, status: str | Sequence[str] | None = Status.KEPT) -> pd.DataFrame:
    """The rows of ``tiles`` whose ``status`` is ``status`` (one or several; ``None``: all).

    In the layer's order.
    """
    if status is None:
        return tiles
    wanted = [status] if isinstance(status, str) else list(status)
    unknown = sorted(set(wanted) - {s.value for s in Status})
    if unknown:
        raise InputError(f"unknown status {', '.join(unknown)}: use {', '.join(s.value for s in Status)}")
    return tiles[tiles["status"].isin(wanted)]


class TileDataset(torch.utils.data.Dataset):
    """The tiles of a run (by default the kept ones) as training samples.

    Each sample is a dict in torchgeo's style: ``image`` (a ``(C, H, W)`` tensor of the tile's
    exact pixel window), ``tile_id``, ``source``, ``scene`` (``""`` without stage 2),
    ``cluster`` (-1 without stage 2), ``bounds`` (left, bottom, right, top in the source's CRS)
    and ``crs`` (the source's CRS as text). Sources are checked against the run's fingerprints
    once, here; each process (``DataLoader`` workers included) opens its own datasets.

    Args:
        run_file: the run's GeoPackage or run folder.
        status: which tiles (default: the kept ones); several, or ``None`` for all.
        pixels: ``all`` (every band) or ``bands`` (the run's bands), both as stored (nodata,
            else 0, past a raster's edge); ``rgb``: the run's 8-bit RGB, as encoded.
        dtype: the image tensor's dtype; ``None`` keeps the file's (uint8 for ``rgb``).
        transforms: applied to each sample dict.

    Raises:
        InputError: ``run_file`` is not a run, a status or pixel mode is unknown, or a source
            changed since the run.
    """

    def __init__(self, run_file: str | os.PathLike, status: str | Sequence[str] | None = Status.KEPT,
                 pixels: str = "all", dtype: torch.dtype | None = torch.float32,
                 transforms: Callable[[dict[str, Any]], dict[str, Any]] | None = None) -> None:
        if pixels not in PIXEL_MODES:
            raise InputError(f"pixels={pixels!r}: use one of {', '.join(PIXEL_MODES)}")
        tiles, record = read_run(run_file)
        chosen = choose_tiles(tiles, status)
        self.run_file = str(run_file)
        self.pixels = pixels
        self.dtype = dtype
        self.transforms = transforms
        self.tiles = chosen.reset_index(drop=True)
        self._opened = {path: record.source(path, check=True) for path in sorted(set(self.tiles["source"]))}
        self._windows = [Window(int(t.col_off), int(t.row_off), int(t.width), int(t.height))
                         for t in self.tiles.itertuples()]
        self._handles: dict[str, DatasetReader] = {}
        self._pid = os.getpid()

    def __len__(self) -> int:
        return len(self.tiles)

    def __getstate__(self) -> dict[str, object]:
        state = self.__dict__.copy()
        state["_handles"] = {}  # open datasets stay in the process that opened them
        return state

    def _dataset(self, path: str):
        if self._pid != os.getpid():  # a forked worker: never share the parent's file handles
            self._handles, self._pid = {}, os.getpid()
        if path not in self._handles:
            self._handles[path] = self._opened[path][0].open()
        return self._handles[path]

    def read(self, index: int) -> np.ndarray:
        """The image of tile ``index`` as a numpy array ``(C, H, W)`` (``pixels`` mode, file dtype)."""
        row = self.tiles.iloc[index]
        source, scaling = self._opened[row["source"]]
        window = self._windows[index]
        src = self._dataset(row["source"])
        if self.pixels == "rgb":
            return read_chip(source, window, scaling, src).transpose(2, 0, 1)
        with read_errors(source.path):
            if self.pixels == "all":
                return read_all_bands(src, window)
            return src.read(source.bands, window=window, boundless=not window_inside(window, src.width, src.height),
                            fill_value=src.nodata or 0)

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not -len(self) <= index < len(self):
            raise IndexError(index)
        index %= len(self)
        image = torch.from_numpy(np.ascontiguousarray(self.read(index)))
        if self.dtype is not None:
            image = image.to(self.dtype)
        row = self.tiles.iloc[index]
        source = self._opened[row["source"]][0]
        scene = row.get("scene")
        cluster = row.get("cluster")
        sample = {
            "image": image,
            "tile_id": str(row["tile_id"]),
            "source": str(row["source"]),
            "scene": "" if scene is None or pd.isna(scene) else str(scene),
            "cluster": -1 if cluster is None or pd.isna(cluster) else int(cluster),
            "bounds": torch.tensor(source.window_bounds(self._windows[index]), dtype=torch.float64),
            "crs": source.crs.to_string() if source.crs is not None else "",
        }
        return self.transforms(sample) if self.transforms is not None else sample

    def close(self) -> None:
        """Close the datasets this process opened."""
        for handle in self._handles.values():
            handle.close()
        self._handles = {}
