"""The ground grid common to all rasters: tiles of overlapping rasters over the same ground share a cell."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from rasterio.crs import CRS

from .grid import RunGrid, SourceGrid
from .scan import SourceTable


@dataclass(frozen=True)
class GroundGrid:
    """The grid of ground cells common to every raster of a run, in the output CRS.

    Cells of ``size`` anchored at ``origin`` (upper left); a tile's cell holds its footprint's centre.
    ``size`` is NaN without a CRS (tiles then share no ground).
    """

    size: float
    origin: tuple[float, float]

    def cells(self, footprints: np.ndarray) -> np.ndarray:
        """(N, 2) int64 ``(row, col)`` cells of footprints in the output CRS; -1 without a CRS."""
        if np.isnan(self.size) or len(footprints) == 0:
            return np.full((len(footprints), 2), -1, dtype=np.int64)
        centres = shapely.get_coordinates(shapely.centroid(footprints))
        cols = np.floor((centres[:, 0] - self.origin[0]) / self.size).astype(np.int64)
        rows = np.floor((self.origin[1] - centres[:, 1]) / self.size).astype(np.int64)
        return np.stack([rows, cols], axis=1)


def cell_ids(cells: np.ndarray) -> np.ndarray:
    """The ``r{row}-c{col}`` text of (N, 2) ground cells (``""`` where there is none, row -1)."""
    return np.array(["" if r < 0 else f"r{r}-c{c}" for r, c in cells.tolist()], dtype=object)


def parse_cells(ids: np.ndarray) -> np.ndarray:
    """(N, 2) int32 ground cells of ``r{row}-c{col}`` text.

    Read back from a run's table (-1 where there is none).
    """
    parts = pd.Series(np.asarray(ids, dtype=object)).astype(str).str.extract(r"^r(-?\d+)-c(-?\d+)$")
    return parts.fillna(-1).astype(np.int32).to_numpy()


def ground_grid(run: RunGrid, crs: CRS | None, chunk: int = 1 << 16) -> GroundGrid:
    """The run's :class:`GroundGrid`.

    Cells the median side of the tiles' footprints in ``crs``, anchored at their upper-left corner (so
    the first grid's tiles sit at cell centres). Rasters in ``crs`` are measured from their transform;
    others, and areas of interest, tile by tile.
    """
    if crs is None or not run.sources:
        return GroundGrid(float("nan"), (float("nan"), float("nan")))
    if run.chips is not None and run.chips.present is None:
        table = run.chips.sources
        if isinstance(table, SourceTable) and all(c == crs for c in table.distinct("crs")):
            return _chips_ground(table)
    sides: list[tuple[np.ndarray, float]] = []  # (sides, weight of each)
    left, top = np.inf, -np.inf
    for grid in run.sources:
        if grid.count == 0:
            continue
        same = grid.source.crs == crs
        if same and grid.present is None:
            t = grid.source.transform
            sides.append((np.array([np.sqrt(abs(t.a * t.e - t.b * t.d) * grid.width * grid.height)]), grid.count))
            corners = [grid.start, grid.start + grid.cols.size - 1, grid.start + grid.size - grid.cols.size,
                       grid.start + grid.size - 1]
            x0, _, _, y1 = shapely.total_bounds(grid.footprints(np.array(corners)))
            left, top = min(left, x0), max(top, y1)
            continue
        for positions in _present_chunks(grid, chunk):
            shapes = grid.footprints(positions)
            if not same:
                shapes = gpd.GeoSeries(shapes, crs=grid.source.crs).to_crs(crs).values
            sides.append((np.sqrt(shapely.area(shapes)), 1.0))
            x0, _, _, y1 = shapely.total_bounds(shapes)
            left, top = min(left, x0), max(top, y1)
    return GroundGrid(_weighted_median(sides), (float(left), float(top)))


def _chips_ground(table: SourceTable) -> GroundGrid:
    """:func:`ground_grid` of chips in the output CRS.

    From their transforms and sizes as arrays (a hundred million georeferenced chips are not a hundred
    million grids).
    """
    a, b, c, d, e, f = table.affine().T
    widths, heights = table.sizes()
    sides = np.sqrt(np.abs(a * e - b * d) * widths * heights)
    xs = [c + a * col + b * row for col, row in ((0, 0), (widths, 0), (0, heights), (widths, heights))]
    ys = [f + d * col + e * row for col, row in ((0, 0), (widths, 0), (0, heights), (widths, heights))]
    left = float(np.min([np.min(x) for x in xs]))
    top = float(np.max([np.max(y) for y in ys]))
    return GroundGrid(float(np.median(np.broadcast_to(sides, widths.shape))), (left, top))


def _present_chunks(grid: SourceGrid, chunk: int) -> Iterator[np.ndarray]:
    """The run positions of a source's present tiles, a chunk at a time."""
    for lo in range(0, grid.size, chunk):
        positions = grid.start + np.arange(lo, min(lo + chunk, grid.size))
        if grid.present is not None:
            positions = positions[grid.present[lo : lo + positions.size]]
        if positions.size:
            yield positions


def _weighted_median(groups: list[tuple[np.ndarray, float]]) -> float:
    """The median of values given in groups.

    Each value of a group standing for ``weight`` (a whole number of) values: :func:`numpy.median` of
    the values written out.
    """
    values = np.concatenate([v for v, _ in groups])
    weights = np.concatenate([np.full(v.size, w, dtype=np.float64) for v, w in groups])
    order = np.argsort(values, kind="stable")
    values, cumulative = values[order], np.cumsum(weights[order])
    total = int(round(cumulative[-1]))

    def at(k: int) -> float:  # the k-th (from 0) of the values written out, in order
        return float(values[np.searchsorted(cumulative, k, side="right")])

    return at(total // 2) if total % 2 else (at(total // 2 - 1) + at(total // 2)) / 2
