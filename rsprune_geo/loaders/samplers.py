"""A torchgeo ``GeoSampler`` that yields exactly a run's kept footprints."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence

import numpy as np
import pandas as pd
import shapely
import torch
from pyproj import CRS
from torchgeo.datasets import GeoDataset
from torchgeo.samplers import GeoSampler

from ..errors import InputError, counted
from ..runs.record import RunRecord
from ..runs.runfile import read_run
from ..runs.vocabulary import Status
from .datasets import choose_tiles

log = logging.getLogger(__name__)


def footprint_boxes(tiles: pd.DataFrame, record: RunRecord, crs) -> np.ndarray:
    """Each tile's footprint as an axis-aligned box ``(xmin, ymin, xmax, ymax)`` in ``crs``.

    A tile's footprint is its pixel window on its source's grid. In the source's own CRS the box
    is that window exactly; in another CRS the footprint, reprojected, is no longer axis-aligned,
    and the box is the largest one centred on it that lies inside it, so that a sample never
    holds pixels of a neighbouring (pruned) tile.
    """
    target = CRS.from_user_input(crs)
    boxes = np.empty((len(tiles), 4), dtype=np.float64)
    for path, part in tiles.groupby("source", sort=False):
        source, _ = record.source(str(path))
        if source.crs is None:
            raise InputError(f"{path}: the source has no CRS; a torchgeo dataset cannot index it")
        a, b, c, d, e, f = source.transform[:6]
        cols = np.stack([part["col_off"], part["col_off"] + part["width"]], axis=1).astype(float)
        rows = np.stack([part["row_off"], part["row_off"] + part["height"]], axis=1).astype(float)
        if b or d:
            raise InputError(f"{path}: a rotated raster grid has no axis-aligned footprints")
        xs, ys = a * cols + c, e * rows + f
        native = np.stack([xs.min(1), ys.min(1), xs.max(1), ys.max(1)], axis=1)
        where = tiles.index.get_indexer(part.index)
        source_crs = CRS.from_user_input(source.crs.to_wkt())
        boxes[where] = native if source_crs == target else _inscribed(native, source_crs, target)
    return boxes


def _inscribed(native: np.ndarray, source_crs: CRS, target: CRS, steps: int = 30) -> np.ndarray:
    import geopandas as gpd

    polygons = gpd.GeoSeries(shapely.box(*native.T), crs=source_crs).to_crs(target)
    polygons = polygons.segmentize(np.abs(native[:, 2] - native[:, 0]).min() / 16) if len(native) else polygons
    polygons = polygons.values
    centre = shapely.get_coordinates(shapely.centroid(polygons))
    bounds = shapely.bounds(polygons)
    half = np.stack([(bounds[:, 2] - bounds[:, 0]) / 2, (bounds[:, 3] - bounds[:, 1]) / 2], axis=1)
    low, high = np.zeros(len(native)), np.ones(len(native))
    for _ in range(steps):  # largest scale of the bounds box, about the centre, still inside
        mid = (low + high) / 2
        box = shapely.box(*(np.concatenate([centre - half * mid[:, None], centre + half * mid[:, None]], axis=1).T))
        inside = shapely.covers(polygons, box)
        low = np.where(inside, mid, low)
        high = np.where(inside, high, mid)
    return np.concatenate([centre - half * low[:, None], centre + half * low[:, None]], axis=1)


class TileGeoSampler(GeoSampler):
    """Sample a torchgeo dataset at exactly a run's kept tiles: one sample a tile.

    For any :class:`~torchgeo.datasets.GeoDataset` over the rasters the run tiled, each sample
    is the tile's footprint in the dataset's CRS (see :func:`footprint_boxes`) and the time
    interval of the tile's own file in the dataset's index. So no pruned pixels and no other
    date enter. Tiles of rasters the dataset does not hold are left out. Unlike torchgeo's
    samplers given a polygon, nothing between kept footprints is sampled.

    Args:
        dataset: the torchgeo dataset.
        run_file: the run's GeoPackage or run folder.
        status: which tiles (default: the kept ones); several, or ``None`` for all.
        roi: keep tiles inside this polygon (the dataset's CRS).
        toi: keep tiles whose time interval overlaps this one.
        shuffle: reorder the samples every epoch.
        generator: the random generator of ``shuffle``.
    """

    def __init__(self, dataset: GeoDataset, run_file: str | os.PathLike,
                 status: str | Sequence[str] | None = Status.KEPT, roi: shapely.Polygon | None = None,
                 toi: pd.Interval | None = None, shuffle: bool = False,
                 generator: torch.Generator | None = None) -> None:
        super().__init__(dataset, roi, toi)
        tiles, record = read_run(run_file)
        self.tiles = choose_tiles(tiles, status).reset_index(drop=True)
        if dataset.crs is None:
            raise InputError("the torchgeo dataset has no CRS")
        boxes = footprint_boxes(self.tiles, record, dataset.crs.to_wkt())
        starts, stops = self._intervals(self.tiles["source"].tolist(), boxes)
        keep = np.ones(len(self.tiles), dtype=bool)
        if roi is not None:
            keep &= shapely.covers(roi, shapely.box(*boxes.T))
        if toi is not None:
            keep &= (starts <= np.datetime64(toi.right)) & (stops >= np.datetime64(toi.left))
        missing = np.isnat(starts)
        if missing.any():
            log.warning("%s from rasters the torchgeo dataset does not hold, left out",
                        counted(int(missing.sum()), "tile"))
            keep &= ~missing
        self.tiles = self.tiles[keep].reset_index(drop=True)
        self.boxes, self.starts, self.stops = boxes[keep], starts[keep], stops[keep]
        self.shuffle = shuffle
        self.generator = generator

    def _intervals(self, paths: list[str], boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        index = self.index
        files = [str(p) for p in index["filepath"]] if "filepath" in index else []
        left = index.index.left.to_numpy(dtype="datetime64[ns]")
        right = index.index.right.to_numpy(dtype="datetime64[ns]")
        geometry = index.geometry.values
        starts = np.full(len(paths), np.datetime64("NaT"), dtype="datetime64[ns]")
        stops = starts.copy()
        # A tile is read from its own file (its own date): the dataset's file at the same path,
        # else (the rasters copied elsewhere) of the same name, else the files it overlaps.
        for key in (os.path.realpath, os.path.basename):
            by_file: dict[str, list[int]] = {}
            for k, path in enumerate(files):
                by_file.setdefault(key(path), []).append(k)
            if any(key(p) in by_file for p in set(paths)):
                break
        else:
            by_file = {}
        for k, (path, box) in enumerate(zip(paths, boxes)):
            rows = by_file.get(key(path), []) if by_file else \
                np.flatnonzero(shapely.intersects(geometry, shapely.box(*box))).tolist()
            if rows:
                starts[k], stops[k] = left[rows].min(), right[rows].max()
        return starts, stops

    def __iter__(self) -> Iterator[tuple[slice, slice, slice]]:
        """Yield ``[xmin:xmax, ymin:ymax, tmin:tmax]`` of each tile, in the layer's order unless shuffled."""
        order = torch.randperm(len(self), generator=self.generator).tolist() if self.shuffle else range(len(self))
        for k in order:
            xmin, ymin, xmax, ymax = self.boxes[k]
            yield (slice(float(xmin), float(xmax)), slice(float(ymin), float(ymax)),
                   slice(pd.Timestamp(self.starts[k]), pd.Timestamp(self.stops[k])))

    def __len__(self) -> int:
        return len(self.tiles)
